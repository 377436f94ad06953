//! What `/metrics` says, in the Prometheus text exposition format (version 0.0.4): a
//! [`Snapshot`] of the daemon's state, gathered on request, rendered by [`render`]. Pure: no
//! I/O, no clock; it allocates only when asked (a scrape), never per tick.

use std::fmt::Write as _;

/// The `Content-Type` of the rendering.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A detection key as of the last tick.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyRate {
    pub(crate) name: String,
    /// Packets per second, or (`connections`) the connections the heaviest source holds.
    pub(crate) value: f64,
    pub(crate) baseline: f64,
    pub(crate) threshold: f64,
    pub(crate) over: bool,
    pub(crate) connections: bool,
}

/// Packets and bytes counted by one of our named counters since the agent started,
/// monotonic across the kernel's counter resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Total {
    /// The counter (traffic) or the set whose rules dropped (drops).
    pub(crate) name: String,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
}

/// How full one of our sets is, as the daemon knows it (no kernel listing per scrape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetFill {
    pub(crate) name: String,
    pub(crate) elements: u64,
    /// None for sets without a `size`.
    pub(crate) size: Option<u64>,
}

/// A histogram: cumulative counts per upper bound (the `+Inf` bucket is `count`), and the
/// sum of the values observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Histogram {
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

/// Everything `/metrics` shows, as plain data.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) version: String,
    pub(crate) uptime_seconds: f64,
    pub(crate) warmed_up: bool,
    pub(crate) monitor: bool,
    /// The last reload's outcome (None: never reloaded).
    pub(crate) last_reload_ok: Option<bool>,
    pub(crate) keys: Vec<KeyRate>,
    /// The accounting counters (what arrives).
    pub(crate) traffic: Vec<Total>,
    /// The drop rules' counters, by set.
    pub(crate) dropped: Vec<Total>,
    /// Open incidents and incidents opened since start, by vector (every vector listed).
    pub(crate) incidents_open: Vec<(&'static str, u64)>,
    pub(crate) incidents_total: Vec<(&'static str, u64)>,
    /// Measures in force for open incidents, by action (every action listed).
    pub(crate) mitigations: Vec<(&'static str, u64)>,
    pub(crate) operator_bans: u64,
    /// Bans put in the kernel since start: by incidents' mitigation, by operators.
    pub(crate) bans_by_incidents: u64,
    pub(crate) bans_by_operators: u64,
    pub(crate) sets: Vec<SetFill>,
    pub(crate) samples_received: u64,
    pub(crate) samples_lost: u64,
    pub(crate) samples_enobufs: u64,
    pub(crate) samples_malformed: u64,
    pub(crate) conntrack_entries: u64,
    /// Conntrack reads (count and dump, on their own thread) done since start, and how long
    /// the last one took.
    pub(crate) conntrack_reads: u64,
    pub(crate) conntrack_read_seconds: f64,
    pub(crate) tables_restored: u64,
    /// Messages from the kernel's tripwire (a protocol far over its floor).
    pub(crate) tripwire_trips: u64,
    /// Fast ticks run to time a counter's run over its threshold.
    pub(crate) fast_ticks: u64,
    /// BGP announcements in force (or, in monitor mode, that would be): RTBH, FlowSpec.
    pub(crate) bgp_rtbh: u64,
    pub(crate) bgp_flowspec: u64,
    /// How late each tick started against the tick timer's schedule, seconds.
    pub(crate) tick_lateness: Histogram,
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The text being written; families are opened one at a time, each with its HELP and TYPE.
struct Exposition {
    text: String,
}

/// The samples of one family.
struct Family<'a> {
    text: &'a mut String,
    name: &'static str,
}

impl Exposition {
    fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert_eq!(
            kind == Kind::Counter,
            name.ends_with("_total"),
            "{name}: counters and only counters end in _total"
        );
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        Family {
            text: &mut self.text,
            name,
        }
    }

    /// A family of one sample without labels.
    fn single(&mut self, name: &'static str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help).sample(&[], value);
    }

    /// A histogram without labels: its `_bucket` series (cumulative, `le` ascending, `+Inf`
    /// last), `_sum` and `_count`.
    fn histogram(&mut self, name: &'static str, help: &str, h: &Histogram) {
        let family = self.family(name, Kind::Histogram, help);
        let text = family.text;
        let mut le = String::new();
        for &(bound, n) in &h.buckets {
            le.clear();
            push_value(&mut le, bound);
            let _ = write!(text, "{name}_bucket{{le=\"{le}\"}} ");
            push_value(text, n as f64);
            text.push('\n');
        }
        let _ = write!(text, "{name}_bucket{{le=\"+Inf\"}} ");
        push_value(text, h.count as f64);
        let _ = write!(text, "\n{name}_sum ");
        push_value(text, h.sum);
        let _ = write!(text, "\n{name}_count ");
        push_value(text, h.count as f64);
        text.push('\n');
    }
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(self.name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        self.text.push(' ');
        push_value(self.text, value);
        self.text.push('\n');
    }
}

/// A sample value: integers without a fraction, the special values as Prometheus spells them.
fn push_value(text: &mut String, value: f64) {
    if value.is_nan() {
        text.push_str("NaN");
    } else if value.is_infinite() {
        text.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(text, "{value}");
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// The snapshot in the text exposition format.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut out = Exposition {
        text: String::with_capacity(16 * 1024),
    };
    render_daemon(&mut out, s);
    render_keys(&mut out, s);
    render_traffic(&mut out, s);
    render_incidents(&mut out, s);
    render_sensing(&mut out, s);
    render_upkeep(&mut out, s);
    out.text
}

/// The daemon's version, uptime and mode, and whether the last reload worked.
fn render_daemon(out: &mut Exposition, s: &Snapshot) {
    use Kind::Gauge;
    out.family(
        "ftagent_build_info",
        Gauge,
        "The running ftagent's version (always 1).",
    )
    .sample(&[("version", &s.version)], 1.0);
    out.single(
        "ftagent_uptime_seconds",
        Gauge,
        "Seconds since the daemon started.",
        s.uptime_seconds,
    );
    out.single(
        "ftagent_warmed_up",
        Gauge,
        "1 once agent.warmup of traffic is learned and verdicts are given.",
        flag(s.warmed_up),
    );
    out.single(
        "ftagent_monitor_mode",
        Gauge,
        "1 in monitor mode: incidents are reported, nothing is dropped.",
        flag(s.monitor),
    );
    out.single(
        "ftagent_config_last_reload_successful",
        Gauge,
        "0 when the last SIGHUP reload failed and the previous configuration runs on.",
        flag(s.last_reload_ok != Some(false)),
    );
}

/// Each detection key's rate, baseline and threshold, and whether it is over.
fn render_keys(out: &mut Exposition, s: &Snapshot) {
    use Kind::Gauge;
    let mut rate = out.family(
        "ftagent_key_packets_per_second",
        Gauge,
        "Packets per second of each detection key over the last tick (new_* keys: new connections).",
    );
    for k in s.keys.iter().filter(|k| !k.connections) {
        rate.sample(&[("key", &k.name)], k.value);
    }
    let mut baseline = out.family(
        "ftagent_key_baseline_packets_per_second",
        Gauge,
        "The learned baseline (EWMA mean) of each detection key.",
    );
    for k in s.keys.iter().filter(|k| !k.connections) {
        baseline.sample(&[("key", &k.name)], k.baseline);
    }
    let mut threshold = out.family(
        "ftagent_key_threshold_packets_per_second",
        Gauge,
        "The rate over which a detection key counts as under attack.",
    );
    for k in s.keys.iter().filter(|k| !k.connections) {
        threshold.sample(&[("key", &k.name)], k.threshold);
    }
    let mut held = out.family(
        "ftagent_key_connections",
        Gauge,
        "Concurrent connections the heaviest source holds to a TCP service (conn_* keys).",
    );
    for k in s.keys.iter().filter(|k| k.connections) {
        held.sample(&[("key", &k.name)], k.value);
    }
    let mut limit = out.family(
        "ftagent_key_threshold_connections",
        Gauge,
        "The connections one source may hold to a TCP service (detection.max_connections_per_source).",
    );
    for k in s.keys.iter().filter(|k| k.connections) {
        limit.sample(&[("key", &k.name)], k.threshold);
    }
    let mut over = out.family(
        "ftagent_key_over_threshold",
        Gauge,
        "1 when a detection key was over its threshold in the last tick.",
    );
    for k in &s.keys {
        over.sample(&[("key", &k.name)], flag(k.over));
    }
}

/// What our counters counted, and what each set's rules dropped.
fn render_traffic(out: &mut Exposition, s: &Snapshot) {
    use Kind::Counter;
    let mut traffic = out.family(
        "ftagent_traffic_packets_total",
        Counter,
        "Packets counted by each accounting counter of table inet ftagent, before any verdict.",
    );
    for t in &s.traffic {
        traffic.sample(&[("counter", &t.name)], t.packets as f64);
    }
    let mut traffic = out.family(
        "ftagent_traffic_bytes_total",
        Counter,
        "Bytes counted by each accounting counter of table inet ftagent, before any verdict.",
    );
    for t in &s.traffic {
        traffic.sample(&[("counter", &t.name)], t.bytes as f64);
    }
    let mut dropped = out.family(
        "ftagent_dropped_packets_total",
        Counter,
        "Packets dropped by the rules each set of table inet ftagent switches on (bans, limits, blocks).",
    );
    for d in &s.dropped {
        dropped.sample(&[("set", &d.name)], d.packets as f64);
    }
    let mut dropped = out.family(
        "ftagent_dropped_bytes_total",
        Counter,
        "Bytes dropped by the rules each set of table inet ftagent switches on (bans, limits, blocks).",
    );
    for d in &s.dropped {
        dropped.sample(&[("set", &d.name)], d.bytes as f64);
    }
}

/// The incidents, what they and the operators hold in force, and how full each set is.
fn render_incidents(out: &mut Exposition, s: &Snapshot) {
    use Kind::{Counter, Gauge};
    let mut open = out.family(
        "ftagent_incidents_open",
        Gauge,
        "Incidents open now, by attack vector.",
    );
    for (vector, n) in &s.incidents_open {
        open.sample(&[("vector", vector)], *n as f64);
    }
    let mut opened = out.family(
        "ftagent_incidents_total",
        Counter,
        "Incidents opened since the daemon started, by attack vector.",
    );
    for (vector, n) in &s.incidents_total {
        opened.sample(&[("vector", vector)], *n as f64);
    }
    let mut active = out.family(
        "ftagent_mitigations_active",
        Gauge,
        "Bans and measures open incidents hold in force (in monitor mode: would hold), by action.",
    );
    for (action, n) in &s.mitigations {
        active.sample(&[("action", action)], *n as f64);
    }
    out.single(
        "ftagent_operator_bans",
        Gauge,
        "Bans made with `ftagent ban` still in force.",
        s.operator_bans as f64,
    );
    let mut bans = out.family(
        "ftagent_bans_total",
        Counter,
        "Bans put in the kernel since the daemon started, by who asked for them.",
    );
    bans.sample(&[("by", "incident")], s.bans_by_incidents as f64);
    bans.sample(&[("by", "operator")], s.bans_by_operators as f64);
    let mut elements = out.family(
        "ftagent_set_elements",
        Gauge,
        "Elements the daemon keeps in each set of table inet ftagent (meters, filled by the kernel, not listed).",
    );
    for set in &s.sets {
        elements.sample(&[("set", &set.name)], set.elements as f64);
    }
    let mut capacity = out.family(
        "ftagent_set_capacity_elements",
        Gauge,
        "The size (most elements) of each bounded set of table inet ftagent.",
    );
    for set in &s.sets {
        if let Some(size) = set.size {
            capacity.sample(&[("set", &set.name)], size as f64);
        }
    }
}

/// The sampled packets and the conntrack reads.
fn render_sensing(out: &mut Exposition, s: &Snapshot) {
    use Kind::{Counter, Gauge};
    out.single(
        "ftagent_nflog_samples_total",
        Counter,
        "Sampled packets received over NFLOG.",
        s.samples_received as f64,
    );
    out.single(
        "ftagent_nflog_samples_lost_total",
        Counter,
        "Sampled packets the kernel could not deliver (NFLOG sequence gaps).",
        s.samples_lost as f64,
    );
    out.single(
        "ftagent_nflog_buffer_overruns_total",
        Counter,
        "Times the NFLOG socket's receive buffer overflowed (ENOBUFS).",
        s.samples_enobufs as f64,
    );
    out.single(
        "ftagent_nflog_malformed_total",
        Counter,
        "NFLOG messages or packets that could not be parsed.",
        s.samples_malformed as f64,
    );
    out.single(
        "ftagent_conntrack_entries",
        Gauge,
        "Entries in the connection tracking table at the last read.",
        s.conntrack_entries as f64,
    );
    out.single(
        "ftagent_conntrack_reads_total",
        Counter,
        "Reads of the connection tracking table (count and dump, on a thread of their own).",
        s.conntrack_reads as f64,
    );
    out.single(
        "ftagent_conntrack_read_seconds",
        Gauge,
        "How long the last read of the connection tracking table took.",
        s.conntrack_read_seconds,
    );
}

/// The daemon's own work: tables put back, trips, short ticks, BGP routes, ticks' lateness.
fn render_upkeep(out: &mut Exposition, s: &Snapshot) {
    use Kind::{Counter, Gauge};
    out.single(
        "ftagent_table_restores_total",
        Counter,
        "Times table inet ftagent was put back after someone else removed or changed it.",
        s.tables_restored as f64,
    );
    out.single(
        "ftagent_tripwire_trips_total",
        Counter,
        "Times the kernel's tripwire woke the agent (an IP protocol at instant_factor x floor_pps).",
        s.tripwire_trips as f64,
    );
    out.single(
        "ftagent_fast_ticks_total",
        Counter,
        "Short ticks run to time a counter's run over its threshold (up to 6 when one goes over).",
        s.fast_ticks as f64,
    );
    let mut bgp = out.family(
        "ftagent_bgp_announcements",
        Gauge,
        "Routes announced upstream through the BGP daemon (in monitor mode: would be), by type.",
    );
    bgp.sample(&[("type", "rtbh")], s.bgp_rtbh as f64);
    bgp.sample(&[("type", "flowspec")], s.bgp_flowspec as f64);
    out.histogram(
        "ftagent_tick_lateness_seconds",
        "How late each tick started against the tick timer's schedule (a tick that ran out several periods counts once for each).",
        &s.tick_lateness,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use super::*;

    /// A snapshot with a bit of everything, awkward label values included.
    fn example() -> Snapshot {
        let total = |name: &str, packets| Total {
            name: name.to_string(),
            packets,
            bytes: packets * 60,
        };
        Snapshot {
            version: "0.1.0".to_string(),
            uptime_seconds: 12.5,
            warmed_up: true,
            monitor: false,
            last_reload_ok: Some(false),
            keys: vec![
                KeyRate {
                    name: "tcp_syn".to_string(),
                    value: 81234.5,
                    baseline: 42.125,
                    threshold: 5000.0,
                    over: true,
                    connections: false,
                },
                KeyRate {
                    name: "odd\"key\\with\nnewline".to_string(),
                    value: f64::NAN,
                    baseline: f64::INFINITY,
                    threshold: 1e-7,
                    over: false,
                    connections: false,
                },
                KeyRate {
                    name: "conn_tcp_80".to_string(),
                    value: 300.0,
                    baseline: 0.0,
                    threshold: 100.0,
                    over: true,
                    connections: true,
                },
            ],
            traffic: vec![total("l3_ipv4", 123456789012), total("tcp_syn", 5)],
            dropped: vec![total("ban4", 99), total("limit_udp", 0)],
            incidents_open: vec![("udp_flood", 1), ("syn_flood", 0)],
            incidents_total: vec![("udp_flood", 3), ("syn_flood", 0)],
            mitigations: vec![("ban", 2), ("limit_port", 0)],
            operator_bans: 1,
            bans_by_incidents: 7,
            bans_by_operators: 1,
            sets: vec![
                SetFill {
                    name: "ban4".to_string(),
                    elements: 3,
                    size: Some(65536),
                },
                SetFill {
                    name: "allow4".to_string(),
                    elements: 4,
                    size: None,
                },
            ],
            samples_received: 1000,
            samples_lost: 2,
            samples_enobufs: 1,
            samples_malformed: 0,
            conntrack_entries: 17,
            conntrack_reads: 4,
            conntrack_read_seconds: 0.0125,
            tables_restored: 1,
            tripwire_trips: 3,
            fast_ticks: 12,
            bgp_rtbh: 1,
            bgp_flowspec: 2,
            tick_lateness: Histogram {
                buckets: vec![(0.000_25, 40), (0.001, 44), (0.1, 45)],
                sum: 0.3125,
                count: 46,
            },
        }
    }

    /// One parsed sample: family name, labels in order, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// A strict reader of the text format 0.0.4 as ftagent must write it: every family
    /// announced by one HELP and one TYPE before its samples, samples of a family together,
    /// valid names, escaped label values, parseable values, no series twice, counters named
    /// `_total` and never negative, a final newline. Returns the samples.
    fn strict_parse(text: &str) -> Result<Vec<Sample>, String> {
        fn is_name(s: &str, colon: bool) -> bool {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
        }
        fn value(s: &str) -> Option<f64> {
            match s {
                "NaN" => Some(f64::NAN),
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                _ if s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
                {
                    s.parse().ok()
                }
                _ => None,
            }
        }
        if !text.ends_with('\n') {
            return Err("no final newline".into());
        }
        let mut help: HashSet<String> = HashSet::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut done: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut series: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let at = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# ") {
                let (keyword, rest) = rest.split_once(' ').ok_or_else(|| at("bare comment"))?;
                let (name, arg) = rest.split_once(' ').ok_or_else(|| at("no text"))?;
                if !is_name(name, true) {
                    return Err(at("bad metric name"));
                }
                if done.contains(name) {
                    return Err(at("family announced again"));
                }
                match keyword {
                    "HELP" => {
                        if !help.insert(name.to_string()) || arg.trim().is_empty() {
                            return Err(at("second or empty HELP"));
                        }
                        if arg.replace("\\\\", "").replace("\\n", "").contains('\\') {
                            return Err(at("bad escape in HELP"));
                        }
                    }
                    "TYPE" => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                            return Err(at("unknown type"));
                        }
                        if types.insert(name.to_string(), arg.to_string()).is_some() {
                            return Err(at("second TYPE"));
                        }
                        if arg == "counter" && !name.ends_with("_total") {
                            return Err(at("a counter not named _total"));
                        }
                        if arg != "counter" && name.ends_with("_total") {
                            return Err(at("_total on a non-counter"));
                        }
                    }
                    _ => return Err(at("unknown comment keyword")),
                }
                if current.as_deref() != Some(name) {
                    if let Some(previous) = current.replace(name.to_string()) {
                        done.insert(previous);
                    }
                }
                continue;
            }
            // name{label="value",...} value
            let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value"))?;
            let name = &line[..name_end];
            if !is_name(name, true) {
                return Err(at("bad metric name"));
            }
            // A histogram's samples are its `_bucket`, `_sum` and `_count` series.
            let family = match current.as_deref() {
                Some(f) if types.get(f).map(String::as_str) == Some("histogram") => {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .find(|suffix| name.strip_suffix(*suffix) == Some(f))
                        .map(|_| f)
                        .ok_or_else(|| at("not a _bucket, _sum or _count of its histogram"))?
                }
                _ => name,
            };
            if current.as_deref() != Some(family)
                || !types.contains_key(family)
                || !help.contains(family)
            {
                return Err(at("sample outside its family, or before its HELP and TYPE"));
            }
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(inner) = rest.strip_prefix('{') {
                let mut chars = inner.char_indices().peekable();
                let end = loop {
                    let Some((start, c)) = chars.next() else {
                        return Err(at("unterminated labels"));
                    };
                    if c == '}' {
                        break start;
                    }
                    let eq = inner[start..]
                        .find('=')
                        .ok_or_else(|| at("label without ="))?
                        + start;
                    let label = &inner[start..eq];
                    if !is_name(label, false) || label.starts_with("__") {
                        return Err(at("bad label name"));
                    }
                    while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                        chars.next();
                    }
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return Err(at("label value not quoted"));
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            None => return Err(at("unterminated label value")),
                            Some((_, '"')) => break,
                            Some((_, '\n')) => return Err(at("raw newline")),
                            Some((_, '\\')) => match chars.next() {
                                Some((_, '\\')) => value.push('\\'),
                                Some((_, '"')) => value.push('"'),
                                Some((_, 'n')) => value.push('\n'),
                                _ => return Err(at("bad escape in a label value")),
                            },
                            Some((_, c)) => value.push(c),
                        }
                    }
                    if labels.iter().any(|(l, _): &(String, String)| l == label) {
                        return Err(at("label twice"));
                    }
                    labels.push((label.to_string(), value));
                    match chars.next() {
                        Some((_, ',')) => continue,
                        Some((i, '}')) => break i,
                        _ => return Err(at("expected , or }")),
                    }
                };
                rest = &inner[end + 1..];
            }
            let text_value = rest
                .strip_prefix(' ')
                .ok_or_else(|| at("no space before value"))?;
            if text_value.contains(' ') {
                return Err(at("timestamps or trailing text are not ours"));
            }
            let v = value(text_value).ok_or_else(|| at("bad value"))?;
            if name.ends_with("_bucket") && !labels.iter().any(|(l, _)| l == "le") {
                return Err(at("a bucket without le"));
            }
            if types[family] == "counter" && (v.is_nan() || v < 0.0) {
                return Err(at("a counter below zero or NaN"));
            }
            let key = format!("{name}{labels:?}");
            if !series.insert(key) {
                return Err(at("series twice"));
            }
            samples.push((name.to_string(), labels, v));
        }
        Ok(samples)
    }

    fn value_of(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && label.map_or(l.is_empty(), |(k, v)| {
                        l.iter().any(|(lk, lv)| lk == k && lv == v)
                    })
            })
            .map(|(_, _, v)| *v)
    }

    #[test]
    fn the_rendering_passes_a_strict_reading() {
        let text = render(&example());
        let samples = strict_parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            value_of(&samples, "ftagent_build_info", Some(("version", "0.1.0"))),
            Some(1.0)
        );
        assert_eq!(
            value_of(
                &samples,
                "ftagent_incidents_open",
                Some(("vector", "udp_flood"))
            ),
            Some(1.0)
        );
        assert_eq!(
            value_of(
                &samples,
                "ftagent_dropped_packets_total",
                Some(("set", "ban4"))
            ),
            Some(99.0)
        );
        assert_eq!(
            value_of(
                &samples,
                "ftagent_traffic_packets_total",
                Some(("counter", "l3_ipv4"))
            ),
            Some(123456789012.0),
            "integers are written whole"
        );
        assert!(text.contains("ftagent_traffic_packets_total{counter=\"l3_ipv4\"} 123456789012\n"));
        assert_eq!(
            value_of(
                &samples,
                "ftagent_key_packets_per_second",
                Some(("key", "odd\"key\\with\nnewline"))
            )
            .map(f64::is_nan),
            Some(true),
            "escaped label values read back as they were"
        );
        assert_eq!(
            value_of(
                &samples,
                "ftagent_key_connections",
                Some(("key", "conn_tcp_80"))
            ),
            Some(300.0)
        );
        assert_eq!(
            value_of(
                &samples,
                "ftagent_key_packets_per_second",
                Some(("key", "conn_tcp_80"))
            ),
            None,
            "connection keys are no rates"
        );
        assert_eq!(
            value_of(&samples, "ftagent_config_last_reload_successful", None),
            Some(0.0)
        );
        assert_eq!(
            value_of(
                &samples,
                "ftagent_set_capacity_elements",
                Some(("set", "allow4"))
            ),
            None,
            "unbounded sets have no capacity"
        );
        let bucket = |le| {
            value_of(
                &samples,
                "ftagent_tick_lateness_seconds_bucket",
                Some(("le", le)),
            )
        };
        assert_eq!(bucket("0.00025"), Some(40.0));
        assert_eq!(bucket("0.1"), Some(45.0));
        assert_eq!(bucket("+Inf"), Some(46.0), "+Inf holds every tick");
        assert_eq!(
            value_of(&samples, "ftagent_tick_lateness_seconds_count", None),
            Some(46.0)
        );
        assert_eq!(
            value_of(&samples, "ftagent_tick_lateness_seconds_sum", None),
            Some(0.3125)
        );
    }

    #[test]
    fn the_strict_reading_catches_mistakes() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
        assert!(strict_parse(good).is_ok());
        let histogram =
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
        assert!(strict_parse(histogram).is_ok());
        let bad = [
            "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2",
            "# HELP a A.\n# TYPE a counter\na 2\n",
            "# HELP a_total A.\n# TYPE a_total gauge\na_total 2\n",
            "a 1\n",
            "# HELP a A.\n# TYPE a gauge\na{x=\"\\q\"} 1\n",
            "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",
            "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
            "# HELP a A.\n# TYPE a gauge\na inf\n",
            "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n",
            "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
            "# HELP 1a A.\n# TYPE 1a gauge\n1a 1\n",
            "# HELP h H.\n# TYPE h histogram\nh_total 1\n",
            "# HELP h H.\n# TYPE h histogram\nh_bucket 1\n",
        ];
        for text in bad {
            assert!(strict_parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn an_empty_snapshot_renders_too() {
        let text = render(&Snapshot::default());
        strict_parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    /// Prometheus's own linter (`promtool check metrics`, Debian package `prometheus`,
    /// installed by tests/deps.sh) reads the rendering: format and naming conventions.
    #[test]
    fn promtool_accepts_the_rendering() {
        let Some(verdict) = promtool_check(&render(&example())) else {
            eprintln!("promtool not installed (tests/deps.sh installs it): skipped");
            return;
        };
        assert_eq!(verdict, Ok(()), "promtool check metrics");
    }

    /// `promtool check metrics` on `text`: None without promtool, else its verdict.
    fn promtool_check(text: &str) -> Option<Result<(), String>> {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(text.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(if out.status.success() && said.trim().is_empty() {
            Ok(())
        } else {
            Err(said)
        })
    }
}
