//! Checking TOML values: the rules of the keys (ranges, shapes), the walk over the document
//! that reads every key through its descriptor (`keys.rs`), and the `file:line` issues found.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::descriptor::Key;
use super::keys::{KEYS, SECTIONS, SERVICE_KEYS};
use super::{Compat, Config, IptablesShim, Mode, OnStop, PortRange, Proto, Sense, Service};
use crate::addr::{Cidr, CidrError};

/// One problem found while checking: where, which key, what.
pub(super) struct Issue {
    pub(crate) span: Range<usize>,
    pub(crate) key: String,
    pub(crate) message: String,
}

/// The allowed range of a duration key, for checking and for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationRule {
    pub(crate) name: &'static str,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) range: &'static str,
}

/// The allowed range of a number key (integers are taken too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloatRule {
    pub(crate) name: &'static str,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) range: &'static str,
}

/// The allowed range of an integer key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntRule {
    pub(crate) name: &'static str,
    pub(crate) min: i128,
    pub(crate) max: i128,
    pub(crate) range: &'static str,
}

/// A port, alone or in a list or range.
const PORT: IntRule = IntRule {
    name: "a port",
    min: 1,
    max: 65535,
    range: "between 1 and 65535",
};
/// A `[[service]]`'s own `floor_pps`.
const FLOOR_PPS: IntRule = IntRule {
    name: "floor_pps",
    min: 1,
    max: u64::MAX as i128,
    range: "at least 1",
};

/// Stores `value` in `slot` when there is one.
pub(super) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// A key as written in a dotted path: bare if it can be, quoted otherwise.
pub(super) fn key_text(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// "a string", "an integer", ... for "found ..." messages.
fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Edit distance, for "did you mean" hints on short keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            let substitute = previous + usize::from(ca != *cb);
            row[j + 1] = substitute.min(row[j] + 1).min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// Parses "443" or "8000-8100" (spaces around the numbers allowed).
pub(super) fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let port = |part: &str| -> Result<u16, String> {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{text:?} is not a port or port range (expected e.g. 443 or \"8000-8100\")"
            ));
        }
        match part.parse::<u16>() {
            Ok(port) if port >= 1 => Ok(port),
            _ => Err(format!(
                "{text:?} is out of range: {} must be {}",
                PORT.name, PORT.range
            )),
        }
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => {
            let single = port(text)?;
            (single, single)
        }
    };
    if first > last {
        return Err(format!(
            "{text:?} is not a valid port range: the first port ({first}) is greater than the last ({last})"
        ));
    }
    Ok(PortRange { first, last })
}

/// Walks the parsed document, collecting issues and filling in a Config.
#[derive(Default)]
pub(crate) struct Checker {
    pub(super) issues: Vec<Issue>,
}

impl Checker {
    pub(super) fn report(&mut self, span: Range<usize>, key: &str, message: String) {
        self.issues.push(Issue {
            span,
            key: key.to_string(),
            message,
        });
    }

    /// The issue earliest in the file, so fixing errors goes top to bottom.
    pub(super) fn first_issue(self) -> Option<Issue> {
        self.issues.into_iter().min_by_key(|issue| issue.span.start)
    }

    fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        path: &str,
        known: &[&str],
        place: &str,
    ) {
        let name = key.get_ref().as_ref();
        let hint = known
            .iter()
            .map(|k| (distance(name, k), *k))
            .filter(|(d, k)| *d <= 2 && *d < k.len())
            .min()
            .map(|(_, k)| format!(" (did you mean {k:?}?)"))
            .unwrap_or_default();
        self.report(
            key.span(),
            path,
            format!("unknown key{hint}; {place}: {}", known.join(", ")),
        );
    }

    pub(super) fn table<'a, 'i>(
        &mut self,
        value: &'a Spanned<DeValue<'i>>,
        path: &str,
        expected: &str,
    ) -> Option<&'a DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            other => {
                self.report(
                    value.span(),
                    path,
                    format!("expected {expected}, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// An array, or a report of what was found instead (`hint`, when not empty, follows it).
    pub(super) fn array<'a, 'i>(
        &mut self,
        value: &'a Spanned<DeValue<'i>>,
        path: &str,
        expected: &str,
        hint: &str,
    ) -> Option<&'a DeArray<'i>> {
        match value.get_ref() {
            DeValue::Array(array) => Some(array),
            other => {
                let space = if hint.is_empty() { "" } else { " " };
                self.report(
                    value.span(),
                    path,
                    format!("expected {expected}, found {}{space}{hint}", kind(other)),
                );
                None
            }
        }
    }

    pub(super) fn string<'a>(
        &mut self,
        value: &'a Spanned<DeValue<'_>>,
        path: &str,
        expected: &str,
    ) -> Option<&'a str> {
        match value.get_ref() {
            DeValue::String(text) => Some(text.as_ref()),
            other => {
                self.report(
                    value.span(),
                    path,
                    format!("expected {expected}, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// `"auto"` (None) or an integer within `rule` (Some).
    pub(super) fn integer_or_auto(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        rule: &IntRule,
    ) -> Option<Option<u64>> {
        match value.get_ref() {
            DeValue::String(text) if text.as_ref() == "auto" => Some(None),
            DeValue::String(text) => {
                self.report(
                    value.span(),
                    path,
                    format!(
                        "{text:?} is not allowed: {} must be {}",
                        rule.name, rule.range
                    ),
                );
                None
            }
            _ => self
                .integer(value, path, rule)
                .and_then(|n| u64::try_from(n).ok())
                .map(Some),
        }
    }

    pub(super) fn integer(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        rule: &IntRule,
    ) -> Option<i128> {
        let DeValue::Integer(integer) = value.get_ref() else {
            let found = kind(value.get_ref());
            self.report(
                value.span(),
                path,
                format!("expected an integer, found {found}"),
            );
            return None;
        };
        let number = i128::from_str_radix(integer.as_str(), integer.radix())
            .ok()
            .filter(|n| (rule.min..=rule.max).contains(n));
        if number.is_none() {
            self.report(
                value.span(),
                path,
                format!(
                    "{integer} is out of range: {} must be {}",
                    rule.name, rule.range
                ),
            );
        }
        number
    }

    /// A number (float or integer) within `rule`.
    pub(super) fn number(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        rule: &FloatRule,
    ) -> Option<f64> {
        let (number, text) = match value.get_ref() {
            DeValue::Float(float) => (float.as_str().parse::<f64>().ok(), float.as_str()),
            DeValue::Integer(integer) => (
                i128::from_str_radix(integer.as_str(), integer.radix())
                    .ok()
                    .map(|n| n as f64),
                integer.as_str(),
            ),
            other => {
                let found = kind(other);
                self.report(
                    value.span(),
                    path,
                    format!("expected a number, found {found}"),
                );
                return None;
            }
        };
        let number = number.filter(|n| (rule.min..=rule.max).contains(n));
        if number.is_none() {
            self.report(
                value.span(),
                path,
                format!(
                    "{text} is out of range: {} must be {}",
                    rule.name, rule.range
                ),
            );
        }
        number
    }

    pub(super) fn boolean(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                let found = kind(other);
                self.report(
                    value.span(),
                    path,
                    format!("expected true or false, found {found}"),
                );
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        rule: &DurationRule,
    ) -> Option<Duration> {
        let text = self.string(
            value,
            path,
            "a duration string such as \"100ms\" or \"10m\"",
        )?;
        let problem = match humantime::parse_duration(text) {
            Err(error) => format!("{text:?} is not a duration: {error}"),
            Ok(d) if d < rule.min => format!(
                "{text:?} is too short: {} must be {}",
                rule.name, rule.range
            ),
            Ok(d) if d > rule.max => {
                format!("{text:?} is too long: {} must be {}", rule.name, rule.range)
            }
            Ok(d) => return Some(d),
        };
        self.report(value.span(), path, problem);
        None
    }

    pub(super) fn absolute_path(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<PathBuf> {
        let text = self.string(value, path, "an absolute path string")?;
        let problem = if text.contains('\0') {
            format!("{text:?} contains a NUL byte")
        } else if !Path::new(text).is_absolute() {
            format!("{text:?} is not an absolute path: it must start with /")
        } else {
            return Some(PathBuf::from(text));
        };
        self.report(value.span(), path, problem);
        None
    }

    /// An integer within `rule`, stored as `X` (the rule's range fits in it).
    pub(super) fn integer_as<X: TryFrom<i128>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        rule: &IntRule,
    ) -> Option<X> {
        self.integer(value, path, rule)
            .and_then(|n| X::try_from(n).ok())
    }

    /// `detection.instant_factor`: 0 (off), or a number from 2 up within `rule`.
    pub(super) fn instant_factor(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        rule: &FloatRule,
    ) -> Option<f64> {
        let f = self.number(value, path, rule)?;
        if f == 0.0 || f >= 2.0 {
            return Some(f);
        }
        let range = rule.range;
        let message = format!("{f} is out of range: {} must be {range}", rule.name);
        self.report(value.span(), path, message);
        None
    }

    /// Reads the whole document over `config`: every table through the descriptors of its keys.
    pub(super) fn document(&mut self, root: &DeTable<'_>, mut config: Config) -> Config {
        for (key, value) in root {
            let path = key_text(key.get_ref());
            match key.get_ref().as_ref() {
                "service" => set(&mut config.services, self.services(value)),
                "webhook" => set(&mut config.webhooks, self.webhooks(value)),
                name if SECTIONS.contains(&name) => {
                    let expected = format!("a table [{name}]");
                    let Some(table) = self.table(value, &path, &expected) else {
                        continue;
                    };
                    let place = format!("the keys of [{name}] are");
                    self.keys(table, name, name, KEYS, &place, &mut config);
                    match name {
                        "sense" => self.distinct_groups(table, &config.sense),
                        "bgp" => self.bgp_criteria(table, &config.bgp),
                        _ => {}
                    }
                }
                _ => self.unknown_key(key, &path, SECTIONS, "the top-level tables are"),
            }
        }
        config
    }

    /// Reads each key of `table` (at `path`) through its descriptor among the `section` keys
    /// of `keys`; an unknown key is reported with those keys' names (`place` introduces them).
    /// False when a known key's value was wrong.
    pub(super) fn keys<T>(
        &mut self,
        table: &DeTable<'_>,
        path: &str,
        section: &str,
        keys: &[Key<T>],
        place: &str,
        target: &mut T,
    ) -> bool {
        let mut good = true;
        for (key, value) in table {
            let key_path = format!("{path}.{}", key_text(key.get_ref()));
            let name = key.get_ref().as_ref();
            let mut known = keys.iter().filter(|k| k.section() == section);
            match known.clone().find(|k| k.leaf() == name) {
                Some(descriptor) => {
                    let before = self.issues.len();
                    descriptor.value.read(self, value, &key_path, target);
                    good &= self.issues.len() == before;
                }
                None => {
                    let names: Vec<&str> = known.by_ref().map(Key::leaf).collect();
                    self.unknown_key(key, &key_path, &names, place);
                }
            }
        }
        good
    }
}

impl Checker {
    /// The `[[service]]` list; None if anything in it is wrong.
    fn services(&mut self, value: &Spanned<DeValue<'_>>) -> Option<Vec<Service>> {
        let array = self.array(
            value,
            "service",
            "one or more [[service]] tables",
            "(write [[service]], with double brackets, once per service)",
        )?;
        if array.is_empty() {
            self.report(
                value.span(),
                "service",
                "lists no services; remove it to use the defaults (22/tcp, 80/tcp, 443/tcp)"
                    .to_string(),
            );
            return None;
        }
        let mut services: Vec<(Service, Range<usize>)> = Vec::new();
        let mut all_good = true;
        for (index, item) in array.iter().enumerate() {
            let path = format!("service[{}]", index + 1);
            match self.service(item, &path) {
                Some((service, port_span)) => {
                    if let Some(earlier) = services.iter().position(|(s, _)| overlap(s, &service)) {
                        self.report(
                            port_span.clone(),
                            &format!("{path}.port"),
                            format!(
                                "{}/{} overlaps service[{}] ({}/{}); each port may be in only one [[service]] per protocol",
                                service.ports,
                                service.proto,
                                earlier + 1,
                                services[earlier].0.ports,
                                services[earlier].0.proto,
                            ),
                        );
                        all_good = false;
                    }
                    services.push((service, port_span));
                }
                None => all_good = false,
            }
        }
        all_good.then(|| services.into_iter().map(|(s, _)| s).collect())
    }

    /// One service and the span of its port value, for overlap messages.
    fn service(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<(Service, Range<usize>)> {
        let table = self.table(
            value,
            path,
            "a [[service]] table such as { port = 443, proto = \"tcp\" }",
        )?;
        let mut service = super::keys::blank_service();
        let good = self.keys(
            table,
            path,
            "service",
            SERVICE_KEYS,
            "the keys of [[service]] are",
            &mut service,
        );
        let entry = |name: &str| table.iter().find(|(k, _)| k.get_ref().as_ref() == name);
        if let (Some(true), Proto::Udp, Some((key, web))) =
            (service.web, service.proto, entry("web"))
        {
            self.report(
                web.span(),
                &format!("{path}.{}", key_text(key.get_ref())),
                "web = true applies to tcp services only (HTTP floods and Slowloris are TCP)"
                    .to_string(),
            );
            return None;
        }
        let Some((_, port)) = entry("port") else {
            self.report(
                value.span(),
                &format!("{path}.port"),
                "missing: every [[service]] needs a port, e.g. port = 443".to_string(),
            );
            return None;
        };
        good.then(|| (service, port.span()))
    }

    /// A `[[service]]`'s `floor_pps`: None unless set.
    pub(super) fn service_floor(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<Option<u64>> {
        self.integer_as(value, path, &FLOOR_PPS).map(Some)
    }

    pub(super) fn port(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<PortRange> {
        match value.get_ref() {
            DeValue::Integer(_) => {
                let port = u16::try_from(self.integer(value, path, &PORT)?).ok()?;
                Some(PortRange {
                    first: port,
                    last: port,
                })
            }
            DeValue::String(text) => match parse_port_range(text) {
                Ok(range) => Some(range),
                Err(message) => {
                    self.report(value.span(), path, message);
                    None
                }
            },
            other => {
                self.report(
                    value.span(),
                    path,
                    format!(
                        "expected a port (443) or a port range (\"8000-8100\"), found {}",
                        kind(other)
                    ),
                );
                None
            }
        }
    }

    pub(super) fn proto(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Proto> {
        match self.string(value, path, "\"tcp\" or \"udp\"")? {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            other => {
                self.report(
                    value.span(),
                    path,
                    format!("{other:?} is not a protocol: expected \"tcp\" or \"udp\""),
                );
                None
            }
        }
    }

    pub(super) fn cidrs(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Vec<Cidr>> {
        let array = self.array(
            value,
            path,
            "a list of CIDRs such as [\"10.0.0.0/8\", \"2001:db8::1\"]",
            "",
        )?;
        let mut cidrs = Vec::with_capacity(array.len());
        let mut all_good = true;
        for (index, item) in array.iter().enumerate() {
            let item_path = format!("{path}[{}]", index + 1);
            let parsed = self
                .string(item, &item_path, "a CIDR string such as \"10.0.0.0/8\"")
                .map(str::parse::<Cidr>);
            match parsed {
                Some(Ok(cidr)) => cidrs.push(cidr),
                Some(Err(error)) => {
                    let message = match &error {
                        CidrError::BadPrefix { .. } | CidrError::PrefixOutOfRange { .. } => {
                            format!("{:?}: {error}", item.get_ref().as_str().unwrap_or(""))
                        }
                        _ => error.to_string(),
                    };
                    self.report(item.span(), &item_path, message);
                    all_good = false;
                }
                None => all_good = false,
            }
        }
        all_good.then_some(cidrs)
    }

    /// A list of at most `max` distinct single ports, in the order written;
    /// None if anything in it is wrong.
    pub(super) fn port_list(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        max: usize,
    ) -> Option<Vec<u16>> {
        let array = self.array(value, path, "a list of ports such as [53, 123]", "")?;
        let mut all_good = true;
        if array.len() > max {
            self.report(
                value.span(),
                path,
                format!("lists {} ports, but at most {max} are allowed", array.len()),
            );
            all_good = false;
        }
        // Each good port with its 1-based position, for duplicate messages.
        let mut ports: Vec<(u16, usize)> = Vec::with_capacity(array.len());
        for (index, item) in array.iter().enumerate() {
            let item_path = format!("{path}[{}]", index + 1);
            let port = self
                .integer(item, &item_path, &PORT)
                .and_then(|n| u16::try_from(n).ok());
            let Some(port) = port else {
                all_good = false;
                continue;
            };
            if let Some((_, earlier)) = ports.iter().find(|(p, _)| *p == port) {
                self.report(
                    item.span(),
                    &item_path,
                    format!(
                        "{port} is already listed as {path}[{earlier}]; each port may be listed only once"
                    ),
                );
                all_good = false;
                continue;
            }
            ports.push((port, index + 1));
        }
        all_good.then(|| ports.into_iter().map(|(p, _)| p).collect())
    }

    pub(super) fn on_stop(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<OnStop> {
        match self.string(value, path, "\"keep\" or \"remove\"")? {
            "keep" => Some(OnStop::Keep),
            "remove" => Some(OnStop::Remove),
            other => {
                self.report(
                    value.span(),
                    path,
                    format!("{other:?} is not a stop action: use \"keep\" or \"remove\""),
                );
                None
            }
        }
    }

    pub(super) fn mode(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Mode> {
        match self.string(value, path, "\"mitigate\" or \"monitor\"")? {
            "mitigate" => Some(Mode::Mitigate),
            "monitor" => Some(Mode::Monitor),
            other => {
                self.report(
                    value.span(),
                    path,
                    format!("{other:?} is not a mode: use \"mitigate\" or \"monitor\""),
                );
                None
            }
        }
    }

    pub(super) fn iptables_shim(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<IptablesShim> {
        const EXPECTED: &str = "\"auto\", \"legacy\", \"nft\" or \"off\"";
        match self.string(value, path, EXPECTED)? {
            "auto" => Some(IptablesShim::Auto),
            "legacy" => Some(IptablesShim::Legacy),
            "nft" => Some(IptablesShim::Nft),
            "off" => Some(IptablesShim::Off),
            other => {
                self.report(
                    value.span(),
                    path,
                    format!("{other:?} is not an iptables_shim mode: expected {EXPECTED}"),
                );
                None
            }
        }
    }

    pub(super) fn compat(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Compat> {
        match self.string(value, path, "\"auto\" or \"legacy\"")? {
            "auto" => Some(Compat::Auto),
            "legacy" => Some(Compat::Legacy),
            other => {
                self.report(
                    value.span(),
                    path,
                    format!("{other:?} is not a compat mode: expected \"auto\" or \"legacy\""),
                );
                None
            }
        }
    }

    /// `sense.nflog_group` and `sense.tripwire_group` must differ.
    fn distinct_groups(&mut self, table: &DeTable<'_>, sense: &Sense) {
        if sense.tripwire_group != sense.nflog_group {
            return;
        }
        let named = ["tripwire_group", "nflog_group"]
            .into_iter()
            .find_map(|name| table.iter().find(|(k, _)| k.get_ref().as_ref() == name));
        if let Some((key, value)) = named {
            let group = sense.nflog_group;
            let message =
                format!("{group} is both the NFLOG group and the tripwire's: they must differ");
            self.report(
                value.span(),
                &format!("sense.{}", key.get_ref().as_ref()),
                message,
            );
        }
    }
}

/// True when two services share a protocol and at least one port.
fn overlap(a: &Service, b: &Service) -> bool {
    a.proto == b.proto && a.ports.first <= b.ports.last && b.ports.first <= a.ports.last
}
