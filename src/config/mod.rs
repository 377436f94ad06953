//! The configuration: TOML text turned into a checked [`Config`], with every
//! key defaulted and every mistake reported as `file:line:column: key: message`.
//! Reading and checking only; nothing here touches the system.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use crate::addr::{Cidr, CidrError};

mod bgp;
mod metrics;
pub use bgp::{community, community_text, Bgp, FlowAction, BLACKHOLE};
mod report;

pub use metrics::Metrics;
pub use report::{Pcap, Webhook, WebhookFormat, WEBHOOK_EVENTS};

/// Where the configuration is read from when no path is given.
pub const DEFAULT_PATH: &str = "/etc/ftagent/ftagent.toml";

/// The whole, checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent: Agent,
    pub services: Vec<Service>,
    pub safelist: Vec<Cidr>,
    pub detection: Detection,
    pub sense: Sense,
    pub mitigation: Mitigation,
    pub nft: Nft,
    pub bgp: Bgp,
    pub webhooks: Vec<Webhook>,
    pub pcap: Pcap,
    pub metrics: Metrics,
}

/// `[agent]`: the daemon itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub tick: Duration,
    pub warmup: Duration,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
}

/// One `[[service]]`: the ports and protocol to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Service {
    pub ports: PortRange,
    pub proto: Proto,
    /// Overrides `detection.floor_pps` for the packets to this service.
    pub floor_pps: Option<u64>,
    /// A web service (HTTP floods, Slowloris); None: by port (see [`Service::is_web`]).
    pub web: Option<bool>,
}

/// TCP ports taken for web services unless a `[[service]]` says `web = false`.
pub const WEB_PORTS: &[u16] = &[80, 443, 8080, 8443];

impl Service {
    /// A TCP service on one of [`WEB_PORTS`], or one configured with `web = true`.
    pub fn is_web(&self) -> bool {
        self.proto == Proto::Tcp
            && self.web.unwrap_or_else(|| {
                WEB_PORTS
                    .iter()
                    .any(|p| (self.ports.first..=self.ports.last).contains(p))
            })
    }
}

/// An inclusive range of ports; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// `[detection]`: baselines, thresholds and incidents (see `detect`).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Packets per second below which no counter is an attack.
    pub floor_pps: u64,
    /// Deviations above the baseline mean that count as unusual.
    pub k: f64,
    /// Multiple of the baseline mean that counts as unusual.
    pub m: f64,
    /// Half-life of the baselines' averages (mean and deviation).
    pub half_life: Duration,
    /// Ticks a counter must be over its threshold, among its last max(20, 2 × this), before
    /// an incident opens (or, for packets, that many ticks' worth of excess in the last second).
    pub consecutive_ticks: u32,
    /// How long an incident's traffic must stay under its exit threshold before it ends.
    pub hold: Duration,
    /// The floor of the new-connection counters, in new connections per second.
    pub floor_new_per_second: u64,
    /// Concurrent connections one source may hold to the service ports.
    pub max_connections_per_source: u32,
    /// A flood this many times over its threshold (kernel tripwire at this many times
    /// `floor_pps`) opens its incident at once, between ticks; 0 turns the tripwire off.
    pub instant_factor: f64,
    /// The absolute ceiling (packets per second) that opens incidents before the baselines
    /// are learned; None ("auto"): drawn from the link's speed (see `detect::ceiling`).
    pub ceiling_pps: Option<u64>,
    /// The link speed the automatic ceiling is drawn from, Mbit/s; None ("auto"): what the
    /// host's interfaces say.
    pub link_mbps: Option<u64>,
}

impl Default for Detection {
    fn default() -> Detection {
        Detection {
            floor_pps: 5000,
            k: 6.0,
            m: 3.0,
            half_life: Duration::from_secs(600),
            consecutive_ticks: 3,
            hold: Duration::from_secs(10),
            floor_new_per_second: 200,
            max_connections_per_source: 100,
            instant_factor: 10.0,
            ceiling_pps: None,
            link_mbps: None,
        }
    }
}

/// `[sense]`: how the agent samples traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sense {
    /// The NFLOG group sampled packets are sent to (groups are per network
    /// namespace).
    pub nflog_group: u16,
    /// The NFLOG group of the tripwire (`detection.instant_factor`): one message the moment a
    /// protocol's traffic is far over its floor. Must differ from `nflog_group`.
    pub tripwire_group: u16,
    /// At most this many packets per second are copied to the agent (a
    /// kernel-side limit).
    pub sample_rate: u32,
    /// Bytes copied of each sampled packet (headers only).
    pub snaplen: u32,
    /// UDP source ports of well-known reflectors, counted separately.
    pub amplification_ports: Vec<u16>,
    /// How often the connection table is read for per-source counts.
    pub conntrack_interval: Duration,
}

/// The default `sense.amplification_ports`: chargen, DNS, portmap, NTP,
/// NetBIOS, SNMP, CLDAP, SSDP, ARD, WS-Discovery, mDNS, memcached and the like.
pub const DEFAULT_AMPLIFICATION_PORTS: &[u16] = &[
    17, 19, 53, 111, 123, 137, 161, 389, 1900, 3283, 3702, 5353, 11211,
];

/// The most ports `sense.amplification_ports` may list.
pub const MAX_AMPLIFICATION_PORTS: usize = 64;
/// The most ports `mitigation.never_limit_ports` may list.
pub const MAX_NEVER_LIMIT_PORTS: usize = 64;

/// `[mitigation]`: what is done about an incident, and what never is.
#[derive(Debug, Clone, PartialEq)]
pub struct Mitigation {
    /// How long a ban lasts.
    pub ban_duration: Duration,
    /// Mitigate, or only detect and report what would be done.
    pub mode: Mode,
    /// New bans a second at most.
    pub max_bans_per_second: u32,
    /// In a concentrated flood, a source carrying at least this share of the
    /// sampled packets is banned.
    pub min_source_share: f64,
    /// When this many banned sources share a /24 (IPv6 /64), the prefix is
    /// banned instead.
    pub prefix_after: u32,
    /// Add the host's own addresses, default gateways, DNS resolvers and the
    /// peers of established SSH sessions to the safelist at start.
    pub auto_safelist: bool,
    /// The port whose established peers `auto_safelist` keeps.
    pub ssh_port: u16,
    /// During a distributed flood, the attacked port is held to this many
    /// packets a second, all sources together.
    pub port_limit_pps: u32,
    /// During a distributed flood on a port, each source is metered: its
    /// packets to that port past this many a second are dropped first,
    /// before the port limit.
    pub source_limit_pps: u32,
    /// During an HTTP flood on a web port, the new connections a second one
    /// source may open to it.
    pub new_connections_per_source: u32,
    /// During an ICMP flood, ICMP (or ICMPv6) is held to this many packets a
    /// second.
    pub icmp_limit_pps: u32,
    /// During a fragment flood, IP fragments are held to this many packets a
    /// second.
    pub fragment_limit_pps: u32,
    /// During a distributed flood to no single port, traffic to closed ports
    /// (no configured service, no socket of the host, no connection) is held
    /// to this many packets a second per transport, all sources together;
    /// 0 drops it.
    pub closed_port_limit_pps: u32,
    /// How long an aggregate measure (a port, ICMP or fragment limit, a
    /// reflector-port block) stays in the kernel unless refreshed. It is
    /// refreshed while its incident lasts and removed when the incident ends.
    pub aggregate_duration: Duration,
    /// What a stop (SIGTERM) does with our bans and measures.
    pub on_stop: OnStop,
    /// A SYN flood on a service port is answered by the kernel's SYN proxy (nft `synproxy`)
    /// where the kernel has it; SYN cookies otherwise.
    pub synproxy: bool,
    /// The MSS the SYN proxy announces for IPv4 (IPv6: 20 less): the server's, i.e. the
    /// interface MTU less 40.
    pub synproxy_mss: u16,
    /// The window scale the SYN proxy announces: the server's (Linux: 7 with default buffers).
    pub synproxy_wscale: u8,
    /// Ports no measure ever limits (port limits, connection meters, the SYN proxy):
    /// per-source bans still apply.
    pub never_limit_ports: Vec<u16>,
}

impl Default for Mitigation {
    fn default() -> Mitigation {
        Mitigation {
            ban_duration: Duration::from_secs(600),
            mode: Mode::Mitigate,
            max_bans_per_second: 50,
            min_source_share: 0.05,
            prefix_after: 4,
            auto_safelist: true,
            ssh_port: 22,
            port_limit_pps: 10_000,
            source_limit_pps: 200,
            new_connections_per_source: 20,
            icmp_limit_pps: 500,
            fragment_limit_pps: 500,
            closed_port_limit_pps: 100,
            aggregate_duration: Duration::from_secs(120),
            on_stop: OnStop::Keep,
            synproxy: true,
            synproxy_mss: 1460,
            synproxy_wscale: 7,
            never_limit_ports: Vec::new(),
        }
    }
}

/// `mitigate` acts on incidents; `monitor` detects and reports what would be
/// done, and touches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Mitigate,
    Monitor,
}

/// What `ftagent run` leaves in the kernel when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnStop {
    /// The table stays: bans and measures run out their timeouts by themselves.
    Keep,
    /// The table is removed in one transaction, with every ban and measure in it.
    Remove,
}

/// `[nft]`: how we talk to the kernel and how big its sets are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nft {
    pub compat: Compat,
    /// The iptables `FTAGENT` chain mirroring our bans, and its backend.
    pub iptables_shim: IptablesShim,
    pub ban4_size: u32,
    pub ban6_size: u32,
    pub bannet4_size: u32,
    pub bannet6_size: u32,
}

/// `auto` probes the kernel; `legacy` forces the older-kernel mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compat {
    Auto,
    Legacy,
}

/// `auto` puts the iptables `FTAGENT` chain in the backend the host's tools use (legacy when
/// the legacy tables are in use, else iptables-nft); `legacy`/`nft` force one; `off`: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IptablesShim {
    Auto,
    Legacy,
    Nft,
    Off,
}

/// Where a loaded configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {}", .path.display(), io_message(.source))]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}:{column}: {key}: {message}", .path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

/// An io::Error's text without the " (os error N)" tail.
fn io_message(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(cut) if text.ends_with(')') => text[..cut].to_string(),
        _ => text,
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Mitigate => "mitigate",
            Mode::Monitor => "monitor",
        })
    }
}

impl fmt::Display for IptablesShim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IptablesShim::Auto => "auto",
            IptablesShim::Legacy => "legacy",
            IptablesShim::Nft => "nft",
            IptablesShim::Off => "off",
        })
    }
}

impl fmt::Display for Compat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compat::Auto => "auto",
            Compat::Legacy => "legacy",
        })
    }
}

impl Default for Config {
    fn default() -> Config {
        let tcp = |port| Service {
            ports: PortRange {
                first: port,
                last: port,
            },
            proto: Proto::Tcp,
            floor_pps: None,
            web: None,
        };
        Config {
            agent: Agent {
                tick: Duration::from_millis(100),
                warmup: Duration::from_secs(60),
                state_dir: PathBuf::from("/var/lib/ftagent"),
                control_socket: PathBuf::from("/run/ftagent/ftagent.sock"),
            },
            services: vec![tcp(22), tcp(80), tcp(443)],
            safelist: Vec::new(),
            detection: Detection::default(),
            sense: Sense {
                nflog_group: 7047,
                tripwire_group: 7048,
                sample_rate: 2000,
                snaplen: 128,
                amplification_ports: DEFAULT_AMPLIFICATION_PORTS.to_vec(),
                conntrack_interval: Duration::from_secs(5),
            },
            mitigation: Mitigation::default(),
            nft: Nft {
                compat: Compat::Auto,
                iptables_shim: IptablesShim::Auto,
                ban4_size: 65536,
                ban6_size: 65536,
                bannet4_size: 16384,
                bannet6_size: 16384,
            },
            bgp: Bgp::default(),
            webhooks: Vec::new(),
            pcap: Pcap::default(),
            metrics: Metrics::default(),
        }
    }
}

impl Config {
    /// Parses TOML text; `origin` is only used to name the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let document = DeTable::parse(text).map_err(|error| {
            let offset = error.span().map_or(0, |span| span.start);
            invalid(
                text,
                origin,
                offset,
                nearest_key(text, offset),
                error.message(),
            )
        })?;
        let mut checker = Checker::default();
        let config = checker.document(document.get_ref());
        match checker.first_issue() {
            Some(issue) => Err(invalid(
                text,
                origin,
                issue.span.start,
                issue.key,
                &issue.message,
            )),
            None => Ok(config),
        }
    }

    /// Loads `path` if given (it must exist); otherwise DEFAULT_PATH if it
    /// exists, else the embedded defaults. Returns where the config came from.
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
        load_from(path, Path::new(DEFAULT_PATH))
    }
}

/// [`Config::load`] with the default path as a parameter, for tests.
fn load_from(
    path: Option<&Path>,
    default_path: &Path,
) -> Result<(Config, ConfigSource), ConfigError> {
    let (path, text) = match path {
        Some(path) => (path, read(path)?),
        None => match std::fs::read_to_string(default_path) {
            Ok(text) => (default_path, text),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok((Config::default(), ConfigSource::Defaults));
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: default_path.to_path_buf(),
                    source,
                })
            }
        },
    };
    let config = Config::from_toml(&text, path)?;
    Ok((config, ConfigSource::File(path.to_path_buf())))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// An `Invalid` error at byte `offset` of `text`.
fn invalid(text: &str, origin: &Path, offset: usize, key: String, message: &str) -> ConfigError {
    let (line, column) = line_column(text, offset);
    ConfigError::Invalid {
        path: origin.to_path_buf(),
        line,
        column,
        key,
        message: message.to_string(),
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Best guess at the key a syntax error is about: the `key =` on the error's
/// line under its table header, else the table, else "-".
fn nearest_key(text: &str, offset: usize) -> String {
    let (error_line, _) = line_column(text, offset);
    let mut table: Option<String> = None;
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        let is_error_line = number + 1 == error_line;
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            if is_error_line {
                return "-".to_string();
            }
            let name = name.trim().to_string();
            let count = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    array_counts.push((name.clone(), 1));
                    1
                }
            };
            table = Some(format!("{name}[{count}]"));
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            if is_error_line {
                return "-".to_string();
            }
            table = Some(name.trim().to_string());
        } else if is_error_line {
            let key = line.split('=').next().unwrap_or("").trim();
            let plausible = !key.is_empty()
                && line.contains('=')
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c));
            return match (plausible, table) {
                (true, Some(table)) => format!("{table}.{key}"),
                (true, None) => key.to_string(),
                (false, Some(table)) => table,
                (false, None) => "-".to_string(),
            };
        }
    }
    table.unwrap_or_else(|| "-".to_string())
}

/// One problem found while checking: where, which key, what.
struct Issue {
    span: Range<usize>,
    key: String,
    message: String,
}

/// The allowed range of a duration key, for checking and for messages.
struct DurationRule {
    name: &'static str,
    min: Duration,
    max: Duration,
    range: &'static str,
}

const TICK: DurationRule = DurationRule {
    name: "the tick",
    min: Duration::from_millis(10),
    max: Duration::from_secs(10),
    range: "between 10ms and 10s",
};
const WARMUP: DurationRule = DurationRule {
    name: "the warmup",
    min: Duration::ZERO,
    max: Duration::from_secs(24 * 3600),
    range: "between 0s and 24h",
};
const BAN_DURATION: DurationRule = DurationRule {
    name: "the ban duration",
    min: Duration::from_secs(1),
    max: Duration::from_secs(30 * 24 * 3600),
    range: "between 1s and 30 days",
};
const AGGREGATE_DURATION: DurationRule = DurationRule {
    name: "the aggregate duration",
    min: Duration::from_secs(10),
    max: Duration::from_secs(3600),
    range: "between 10s and 1h",
};
const HALF_LIFE: DurationRule = DurationRule {
    name: "the half-life",
    min: Duration::from_secs(10),
    max: Duration::from_secs(7 * 24 * 3600),
    range: "between 10s and 7 days",
};
const HOLD: DurationRule = DurationRule {
    name: "the hold time",
    min: Duration::ZERO,
    max: Duration::from_secs(3600),
    range: "between 0s and 1h",
};
const CONNTRACK_INTERVAL: DurationRule = DurationRule {
    name: "the conntrack interval",
    min: Duration::from_secs(1),
    max: Duration::from_secs(3600),
    range: "between 1s and 1h",
};

/// The allowed range of a number key (integers are taken too).
struct FloatRule {
    name: &'static str,
    min: f64,
    max: f64,
    range: &'static str,
}

const K: FloatRule = FloatRule {
    name: "k",
    min: 0.0,
    max: 1000.0,
    range: "between 0 and 1000",
};
const M: FloatRule = FloatRule {
    name: "m",
    min: 1.0,
    max: 1000.0,
    range: "between 1 and 1000",
};
const INSTANT_FACTOR: FloatRule = FloatRule {
    name: "instant_factor",
    min: 0.0,
    max: 1000.0,
    range: "0 (off) or between 2 and 1000",
};
const MIN_SOURCE_SHARE: FloatRule = FloatRule {
    name: "min_source_share",
    min: 0.001,
    max: 1.0,
    range: "between 0.001 and 1",
};

/// The allowed range of an integer key.
struct IntRule {
    name: &'static str,
    min: i128,
    max: i128,
    range: &'static str,
}

const PORT: IntRule = IntRule {
    name: "a port",
    min: 1,
    max: 65535,
    range: "between 1 and 65535",
};
const FLOOR_PPS: IntRule = IntRule {
    name: "floor_pps",
    min: 1,
    max: u64::MAX as i128,
    range: "at least 1",
};
const FLOOR_NEW: IntRule = IntRule {
    name: "floor_new_per_second",
    min: 1,
    max: u64::MAX as i128,
    range: "at least 1",
};
const CONSECUTIVE_TICKS: IntRule = IntRule {
    name: "consecutive_ticks",
    min: 1,
    max: 100,
    range: "between 1 and 100",
};
const MAX_CONNECTIONS: IntRule = IntRule {
    name: "max_connections_per_source",
    min: 1,
    max: 10_000_000,
    range: "between 1 and 10000000",
};
const CEILING_PPS: IntRule = IntRule {
    name: "ceiling_pps",
    min: 1,
    max: 1_000_000_000,
    range: "\"auto\" or between 1 and 1000000000",
};
const LINK_MBPS: IntRule = IntRule {
    name: "link_mbps",
    min: 1,
    max: 10_000_000,
    range: "\"auto\" or between 1 and 10000000",
};
const NFLOG_GROUP: IntRule = IntRule {
    name: "the NFLOG group",
    min: 1,
    max: 65535,
    range: "between 1 and 65535",
};
const SAMPLE_RATE: IntRule = IntRule {
    name: "the sample rate",
    min: 10,
    max: 100_000,
    range: "between 10 and 100000",
};
const SNAPLEN: IntRule = IntRule {
    name: "snaplen",
    min: 40,
    max: 1500,
    range: "between 40 and 1500",
};
const MAX_BANS_PER_SECOND: IntRule = IntRule {
    name: "max_bans_per_second",
    min: 1,
    max: 10_000,
    range: "between 1 and 10000",
};
const PORT_LIMIT_PPS: IntRule = IntRule {
    name: "port_limit_pps",
    min: 1,
    max: 10_000_000,
    range: "between 1 and 10000000",
};
const SOURCE_LIMIT_PPS: IntRule = IntRule {
    name: "source_limit_pps",
    min: 1,
    max: 10_000_000,
    range: "between 1 and 10000000",
};
const NEW_CONNECTIONS_PER_SOURCE: IntRule = IntRule {
    name: "new_connections_per_source",
    min: 1,
    max: 100_000,
    range: "between 1 and 100000",
};
const ICMP_LIMIT_PPS: IntRule = IntRule {
    name: "icmp_limit_pps",
    min: 1,
    max: 1_000_000,
    range: "between 1 and 1000000",
};
const FRAGMENT_LIMIT_PPS: IntRule = IntRule {
    name: "fragment_limit_pps",
    min: 1,
    max: 1_000_000,
    range: "between 1 and 1000000",
};
const CLOSED_PORT_LIMIT_PPS: IntRule = IntRule {
    name: "closed_port_limit_pps",
    min: 0,
    max: 1_000_000,
    range: "between 0 (drop) and 1000000",
};
const SYNPROXY_MSS: IntRule = IntRule {
    name: "synproxy_mss",
    min: 536,
    max: 9000,
    range: "between 536 and 9000",
};
const SYNPROXY_WSCALE: IntRule = IntRule {
    name: "synproxy_wscale",
    min: 0,
    max: 14,
    range: "between 0 and 14",
};
const PREFIX_AFTER: IntRule = IntRule {
    name: "prefix_after",
    min: 2,
    max: 256,
    range: "between 2 and 256",
};
const SSH_PORT: IntRule = IntRule {
    name: "the SSH port",
    min: 1,
    max: 65535,
    range: "between 1 and 65535",
};
const SET_SIZE: IntRule = IntRule {
    name: "a set size",
    min: 1,
    max: 16_777_216,
    range: "between 1 and 16777216",
};

const TOP_KEYS: &[&str] = &[
    "agent",
    "service",
    "safelist",
    "detection",
    "sense",
    "mitigation",
    "nft",
    "bgp",
    "webhook",
    "pcap",
    "metrics",
];
const AGENT_KEYS: &[&str] = &["tick", "warmup", "state_dir", "control_socket"];
const SERVICE_KEYS: &[&str] = &["port", "proto", "floor_pps", "web"];
const SAFELIST_KEYS: &[&str] = &["cidrs"];
const DETECTION_KEYS: &[&str] = &[
    "floor_pps",
    "k",
    "m",
    "half_life",
    "consecutive_ticks",
    "hold",
    "floor_new_per_second",
    "max_connections_per_source",
    "instant_factor",
    "ceiling_pps",
    "link_mbps",
];
const SENSE_KEYS: &[&str] = &[
    "nflog_group",
    "tripwire_group",
    "sample_rate",
    "snaplen",
    "amplification_ports",
    "conntrack_interval",
];
const MITIGATION_KEYS: &[&str] = &[
    "ban_duration",
    "mode",
    "max_bans_per_second",
    "min_source_share",
    "prefix_after",
    "auto_safelist",
    "ssh_port",
    "port_limit_pps",
    "source_limit_pps",
    "new_connections_per_source",
    "icmp_limit_pps",
    "fragment_limit_pps",
    "closed_port_limit_pps",
    "aggregate_duration",
    "on_stop",
    "synproxy",
    "synproxy_mss",
    "synproxy_wscale",
    "never_limit_ports",
];
const NFT_KEYS: &[&str] = &[
    "compat",
    "iptables_shim",
    "ban4_size",
    "ban6_size",
    "bannet4_size",
    "bannet6_size",
];

/// Stores `value` in `slot` when there is one.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// A key as written in a dotted path: bare if it can be, quoted otherwise.
fn key_text(key: &str) -> String {
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
fn parse_port_range(text: &str) -> Result<PortRange, String> {
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
struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn report(&mut self, span: Range<usize>, key: &str, message: String) {
        self.issues.push(Issue {
            span,
            key: key.to_string(),
            message,
        });
    }

    /// The issue earliest in the file, so fixing errors goes top to bottom.
    fn first_issue(self) -> Option<Issue> {
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

    fn table<'a, 'i>(
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
    fn array<'a, 'i>(
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

    fn string<'a>(
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

    /// An integer within `rule` that fits in 32 bits.
    fn integer_u32(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        rule: &IntRule,
    ) -> Option<u32> {
        self.integer(value, path, rule)
            .and_then(|n| u32::try_from(n).ok())
    }

    /// `"auto"` (None) or an integer within `rule` (Some).
    fn integer_or_auto(
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

    fn integer(
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
    fn number(
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

    fn boolean(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<bool> {
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

    fn duration(
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

    fn absolute_path(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<PathBuf> {
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

    fn document(&mut self, root: &DeTable<'_>) -> Config {
        let mut config = Config::default();
        for (key, value) in root {
            let path = key_text(key.get_ref());
            match key.get_ref().as_ref() {
                "agent" => {
                    if let Some(table) = self.table(value, &path, "a table [agent]") {
                        self.agent(table, &mut config.agent);
                    }
                }
                "service" => set(&mut config.services, self.services(value)),
                "safelist" => {
                    if let Some(table) = self.table(value, &path, "a table [safelist]") {
                        self.safelist(table, &mut config.safelist);
                    }
                }
                "detection" => {
                    if let Some(table) = self.table(value, &path, "a table [detection]") {
                        self.detection(table, &mut config.detection);
                    }
                }
                "sense" => {
                    if let Some(table) = self.table(value, &path, "a table [sense]") {
                        self.sense(table, &mut config.sense);
                    }
                }
                "mitigation" => {
                    if let Some(table) = self.table(value, &path, "a table [mitigation]") {
                        self.mitigation(table, &mut config.mitigation);
                    }
                }
                "nft" => {
                    if let Some(table) = self.table(value, &path, "a table [nft]") {
                        self.nft(table, &mut config.nft);
                    }
                }
                "bgp" => {
                    if let Some(table) = self.table(value, &path, "a table [bgp]") {
                        self.bgp(table, &mut config.bgp);
                    }
                }
                "webhook" => set(&mut config.webhooks, self.webhooks(value)),
                "pcap" => {
                    if let Some(table) = self.table(value, &path, "a table [pcap]") {
                        self.pcap(table, &mut config.pcap);
                    }
                }
                "metrics" => {
                    if let Some(table) = self.table(value, &path, "a table [metrics]") {
                        self.metrics(table, &mut config.metrics);
                    }
                }
                _ => self.unknown_key(key, &path, TOP_KEYS, "the top-level tables are"),
            }
        }
        config
    }

    fn agent(&mut self, table: &DeTable<'_>, agent: &mut Agent) {
        for (key, value) in table {
            let path = format!("agent.{}", key_text(key.get_ref()));
            match key.get_ref().as_ref() {
                "tick" => set(&mut agent.tick, self.duration(value, &path, &TICK)),
                "warmup" => set(&mut agent.warmup, self.duration(value, &path, &WARMUP)),
                "state_dir" => set(&mut agent.state_dir, self.absolute_path(value, &path)),
                "control_socket" => {
                    set(&mut agent.control_socket, self.absolute_path(value, &path))
                }
                _ => self.unknown_key(key, &path, AGENT_KEYS, "the keys of [agent] are"),
            }
        }
    }

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
        let mut ports: Option<Option<(PortRange, Range<usize>)>> = None;
        let mut proto = Some(Proto::Tcp);
        let mut floor_pps = Some(None);
        let mut web: Option<Option<(bool, Range<usize>, String)>> = Some(None);
        for (key, item) in table {
            let key_path = format!("{path}.{}", key_text(key.get_ref()));
            match key.get_ref().as_ref() {
                "port" => ports = Some(self.port(item, &key_path).map(|p| (p, item.span()))),
                "proto" => proto = self.proto(item, &key_path),
                "floor_pps" => {
                    floor_pps = self
                        .integer(item, &key_path, &FLOOR_PPS)
                        .and_then(|n| u64::try_from(n).ok())
                        .map(Some)
                }
                "web" => {
                    web = self
                        .boolean(item, &key_path)
                        .map(|b| Some((b, item.span(), key_path.clone())))
                }
                _ => self.unknown_key(key, &key_path, SERVICE_KEYS, "the keys of [[service]] are"),
            }
        }
        if let (Some(Some((true, span, web_path))), Some(Proto::Udp)) = (&web, proto) {
            self.report(
                span.clone(),
                web_path,
                "web = true applies to tcp services only (HTTP floods and Slowloris are TCP)"
                    .to_string(),
            );
            return None;
        }
        let Some(ports) = ports else {
            self.report(
                value.span(),
                &format!("{path}.port"),
                "missing: every [[service]] needs a port, e.g. port = 443".to_string(),
            );
            return None;
        };
        let (ports, port_span) = ports?;
        Some((
            Service {
                ports,
                proto: proto?,
                floor_pps: floor_pps?,
                web: web?.map(|(b, _, _)| b),
            },
            port_span,
        ))
    }

    fn port(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<PortRange> {
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

    fn proto(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Proto> {
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

    fn safelist(&mut self, table: &DeTable<'_>, safelist: &mut Vec<Cidr>) {
        for (key, value) in table {
            let path = format!("safelist.{}", key_text(key.get_ref()));
            match key.get_ref().as_ref() {
                "cidrs" => set(safelist, self.cidrs(value, &path)),
                _ => self.unknown_key(key, &path, SAFELIST_KEYS, "the keys of [safelist] are"),
            }
        }
    }

    fn cidrs(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Vec<Cidr>> {
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

    fn detection(&mut self, table: &DeTable<'_>, detection: &mut Detection) {
        for (key, value) in table {
            let path = format!("detection.{}", key_text(key.get_ref()));
            match key.get_ref().as_ref() {
                "floor_pps" => set(
                    &mut detection.floor_pps,
                    self.integer(value, &path, &FLOOR_PPS)
                        .and_then(|n| u64::try_from(n).ok()),
                ),
                "k" => set(&mut detection.k, self.number(value, &path, &K)),
                "m" => set(&mut detection.m, self.number(value, &path, &M)),
                "half_life" => set(
                    &mut detection.half_life,
                    self.duration(value, &path, &HALF_LIFE),
                ),
                "consecutive_ticks" => set(
                    &mut detection.consecutive_ticks,
                    self.integer_u32(value, &path, &CONSECUTIVE_TICKS),
                ),
                "hold" => set(&mut detection.hold, self.duration(value, &path, &HOLD)),
                "floor_new_per_second" => set(
                    &mut detection.floor_new_per_second,
                    self.integer(value, &path, &FLOOR_NEW)
                        .and_then(|n| u64::try_from(n).ok()),
                ),
                "max_connections_per_source" => set(
                    &mut detection.max_connections_per_source,
                    self.integer_u32(value, &path, &MAX_CONNECTIONS),
                ),
                "instant_factor" => set(
                    &mut detection.instant_factor,
                    self.number(value, &path, &INSTANT_FACTOR).and_then(|f| {
                        if f == 0.0 || f >= 2.0 {
                            return Some(f);
                        }
                        let range = INSTANT_FACTOR.range;
                        let message =
                            format!("{f} is out of range: instant_factor must be {range}");
                        self.report(value.span(), &path, message);
                        None
                    }),
                ),
                "ceiling_pps" => set(
                    &mut detection.ceiling_pps,
                    self.integer_or_auto(value, &path, &CEILING_PPS),
                ),
                "link_mbps" => set(
                    &mut detection.link_mbps,
                    self.integer_or_auto(value, &path, &LINK_MBPS),
                ),
                _ => self.unknown_key(key, &path, DETECTION_KEYS, "the keys of [detection] are"),
            }
        }
    }

    fn sense(&mut self, table: &DeTable<'_>, sense: &mut Sense) {
        for (key, value) in table {
            let path = format!("sense.{}", key_text(key.get_ref()));
            match key.get_ref().as_ref() {
                "nflog_group" => set(
                    &mut sense.nflog_group,
                    self.integer(value, &path, &NFLOG_GROUP)
                        .and_then(|n| u16::try_from(n).ok()),
                ),
                "tripwire_group" => set(
                    &mut sense.tripwire_group,
                    self.integer(value, &path, &NFLOG_GROUP)
                        .and_then(|n| u16::try_from(n).ok()),
                ),
                "sample_rate" => set(
                    &mut sense.sample_rate,
                    self.integer_u32(value, &path, &SAMPLE_RATE),
                ),
                "snaplen" => set(&mut sense.snaplen, self.integer_u32(value, &path, &SNAPLEN)),
                "amplification_ports" => set(
                    &mut sense.amplification_ports,
                    self.port_list(value, &path, MAX_AMPLIFICATION_PORTS),
                ),
                "conntrack_interval" => set(
                    &mut sense.conntrack_interval,
                    self.duration(value, &path, &CONNTRACK_INTERVAL),
                ),
                _ => self.unknown_key(key, &path, SENSE_KEYS, "the keys of [sense] are"),
            }
        }
        if sense.tripwire_group == sense.nflog_group {
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

    /// A list of at most `max` distinct single ports, in the order written;
    /// None if anything in it is wrong.
    fn port_list(
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

    fn mitigation(&mut self, table: &DeTable<'_>, mitigation: &mut Mitigation) {
        for (key, value) in table {
            let path = format!("mitigation.{}", key_text(key.get_ref()));
            match key.get_ref().as_ref() {
                "ban_duration" => set(
                    &mut mitigation.ban_duration,
                    self.duration(value, &path, &BAN_DURATION),
                ),
                "mode" => set(&mut mitigation.mode, self.mode(value, &path)),
                "max_bans_per_second" => set(
                    &mut mitigation.max_bans_per_second,
                    self.integer_u32(value, &path, &MAX_BANS_PER_SECOND),
                ),
                "min_source_share" => set(
                    &mut mitigation.min_source_share,
                    self.number(value, &path, &MIN_SOURCE_SHARE),
                ),
                "prefix_after" => set(
                    &mut mitigation.prefix_after,
                    self.integer_u32(value, &path, &PREFIX_AFTER),
                ),
                "auto_safelist" => set(&mut mitigation.auto_safelist, self.boolean(value, &path)),
                "ssh_port" => set(
                    &mut mitigation.ssh_port,
                    self.integer(value, &path, &SSH_PORT)
                        .and_then(|n| u16::try_from(n).ok()),
                ),
                "port_limit_pps" => set(
                    &mut mitigation.port_limit_pps,
                    self.integer_u32(value, &path, &PORT_LIMIT_PPS),
                ),
                "source_limit_pps" => set(
                    &mut mitigation.source_limit_pps,
                    self.integer_u32(value, &path, &SOURCE_LIMIT_PPS),
                ),
                "new_connections_per_source" => set(
                    &mut mitigation.new_connections_per_source,
                    self.integer_u32(value, &path, &NEW_CONNECTIONS_PER_SOURCE),
                ),
                "icmp_limit_pps" => set(
                    &mut mitigation.icmp_limit_pps,
                    self.integer_u32(value, &path, &ICMP_LIMIT_PPS),
                ),
                "fragment_limit_pps" => set(
                    &mut mitigation.fragment_limit_pps,
                    self.integer_u32(value, &path, &FRAGMENT_LIMIT_PPS),
                ),
                "closed_port_limit_pps" => set(
                    &mut mitigation.closed_port_limit_pps,
                    self.integer_u32(value, &path, &CLOSED_PORT_LIMIT_PPS),
                ),
                "aggregate_duration" => set(
                    &mut mitigation.aggregate_duration,
                    self.duration(value, &path, &AGGREGATE_DURATION),
                ),
                "on_stop" => set(&mut mitigation.on_stop, self.on_stop(value, &path)),
                "synproxy" => set(&mut mitigation.synproxy, self.boolean(value, &path)),
                "synproxy_mss" => set(
                    &mut mitigation.synproxy_mss,
                    self.integer(value, &path, &SYNPROXY_MSS)
                        .and_then(|n| u16::try_from(n).ok()),
                ),
                "synproxy_wscale" => set(
                    &mut mitigation.synproxy_wscale,
                    self.integer(value, &path, &SYNPROXY_WSCALE)
                        .and_then(|n| u8::try_from(n).ok()),
                ),
                "never_limit_ports" => set(
                    &mut mitigation.never_limit_ports,
                    self.port_list(value, &path, MAX_NEVER_LIMIT_PORTS),
                ),
                _ => self.unknown_key(key, &path, MITIGATION_KEYS, "the keys of [mitigation] are"),
            }
        }
    }

    fn on_stop(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<OnStop> {
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

    fn mode(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Mode> {
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

    fn nft(&mut self, table: &DeTable<'_>, nft: &mut Nft) {
        for (key, value) in table {
            let path = format!("nft.{}", key_text(key.get_ref()));
            let name = key.get_ref().as_ref();
            let size_slot = match name {
                "ban4_size" => Some(&mut nft.ban4_size),
                "ban6_size" => Some(&mut nft.ban6_size),
                "bannet4_size" => Some(&mut nft.bannet4_size),
                "bannet6_size" => Some(&mut nft.bannet6_size),
                _ => None,
            };
            if let Some(slot) = size_slot {
                let size = self
                    .integer(value, &path, &SET_SIZE)
                    .and_then(|n| u32::try_from(n).ok());
                set(slot, size);
            } else if name == "compat" {
                set(&mut nft.compat, self.compat(value, &path));
            } else if name == "iptables_shim" {
                set(&mut nft.iptables_shim, self.iptables_shim(value, &path));
            } else {
                self.unknown_key(key, &path, NFT_KEYS, "the keys of [nft] are");
            }
        }
    }

    fn iptables_shim(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<IptablesShim> {
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

    fn compat(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Compat> {
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
}

/// True when two services share a protocol and at least one port.
fn overlap(a: &Service, b: &Service) -> bool {
    a.proto == b.proto && a.ports.first <= b.ports.last && b.ports.first <= a.ports.last
}

#[cfg(test)]
mod tests;
