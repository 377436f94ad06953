//! The configuration: TOML text turned into a checked [`Config`], with every
//! key defaulted and every mistake reported as `file:line:column: key: message`.
//! Reading and checking only; nothing here touches the system.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use toml::de::DeTable;

use crate::addr::Cidr;

mod bgp;
mod check;
mod descriptor;
mod keys;
mod metrics;
mod report;

#[cfg(test)]
pub(crate) use bgp::community;
pub(crate) use bgp::{community_text, Bgp, FlowAction, BLACKHOLE};
#[cfg(test)]
pub(crate) use descriptor::regenerate_docs;
pub(crate) use descriptor::{all as all_keys, Initial, KeyDoc, Reload};
pub use descriptor::{commented_file, default_file, keys_text};
pub(crate) use metrics::Metrics;
pub(crate) use report::{Pcap, Webhook, WebhookFormat};

/// Where the configuration is read from when no path is given.
pub const DEFAULT_PATH: &str = "/etc/ftagent/ftagent.toml";

/// The whole, checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent: Agent,
    pub(crate) services: Vec<Service>,
    pub(crate) safelist: Vec<Cidr>,
    pub(crate) detection: Detection,
    pub(crate) sense: Sense,
    pub mitigation: Mitigation,
    pub(crate) nft: Nft,
    pub(crate) bgp: Bgp,
    pub(crate) webhooks: Vec<Webhook>,
    pub(crate) pcap: Pcap,
    pub(crate) metrics: Metrics,
}

/// `[agent]`: the daemon itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub(crate) tick: Duration,
    pub(crate) warmup: Duration,
    pub(crate) state_dir: PathBuf,
    pub control_socket: PathBuf,
}

/// One `[[service]]`: the ports and protocol to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Service {
    pub(crate) ports: PortRange,
    pub(crate) proto: Proto,
    /// Overrides `detection.floor_pps` for the packets to this service.
    pub(crate) floor_pps: Option<u64>,
    /// A web service (HTTP floods, Slowloris); None: by port (see [`Service::is_web`]).
    pub(crate) web: Option<bool>,
}

/// TCP ports taken for web services unless a `[[service]]` says `web = false`.
pub(crate) const WEB_PORTS: &[u16] = &[80, 443, 8080, 8443];

impl Service {
    /// A TCP service on one of [`WEB_PORTS`], or one configured with `web = true`.
    pub(crate) fn is_web(&self) -> bool {
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
pub(crate) struct PortRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

/// `[detection]`: baselines, thresholds and incidents (see `detect`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Detection {
    /// Packets per second below which no counter is an attack.
    pub(crate) floor_pps: u64,
    /// Deviations above the baseline mean that count as unusual.
    pub(crate) k: f64,
    /// Multiple of the baseline mean that counts as unusual.
    pub(crate) m: f64,
    /// Half-life of the baselines' averages (mean and deviation).
    pub(crate) half_life: Duration,
    /// Ticks a counter must be over its threshold, among its last max(20, 2 × this), before
    /// an incident opens (or, for packets, that many ticks' worth of excess in the last second).
    pub(crate) consecutive_ticks: u32,
    /// How long an incident's traffic must stay under its exit threshold before it ends.
    pub(crate) hold: Duration,
    /// The floor of the new-connection counters, in new connections per second.
    pub(crate) floor_new_per_second: u64,
    /// Concurrent connections one source may hold to the service ports.
    pub(crate) max_connections_per_source: u32,
    /// A flood this many times over its threshold (kernel tripwire at this many times
    /// `floor_pps`) opens its incident at once, between ticks; 0 turns the tripwire off.
    pub(crate) instant_factor: f64,
    /// The absolute ceiling (packets per second) that opens incidents before the baselines
    /// are learned; None ("auto"): drawn from the link's speed (see `detect::ceiling`).
    pub(crate) ceiling_pps: Option<u64>,
    /// The link speed the automatic ceiling is drawn from, Mbit/s; None ("auto"): what the
    /// host's interfaces say.
    pub(crate) link_mbps: Option<u64>,
}

impl Default for Detection {
    /// The descriptors' defaults (see `keys.rs`).
    fn default() -> Detection {
        Config::default().detection
    }
}

/// `[sense]`: how the agent samples traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sense {
    /// The NFLOG group sampled packets are sent to (groups are per network
    /// namespace).
    pub(crate) nflog_group: u16,
    /// The NFLOG group of the tripwire (`detection.instant_factor`): one message the moment a
    /// protocol's traffic is far over its floor. Must differ from `nflog_group`.
    pub(crate) tripwire_group: u16,
    /// At most this many packets per second are copied to the agent (a
    /// kernel-side limit).
    pub(crate) sample_rate: u32,
    /// Bytes copied of each sampled packet (headers only).
    pub(crate) snaplen: u32,
    /// UDP source ports of well-known reflectors, counted separately.
    pub(crate) amplification_ports: Vec<u16>,
    /// How often the connection table is read for per-source counts.
    pub(crate) conntrack_interval: Duration,
}

/// The default `sense.amplification_ports`: chargen, DNS, portmap, NTP,
/// NetBIOS, SNMP, CLDAP, SSDP, ARD, WS-Discovery, mDNS, memcached and the like.
#[cfg(test)]
pub(crate) const DEFAULT_AMPLIFICATION_PORTS: &[u16] = &[
    17, 19, 53, 111, 123, 137, 161, 389, 1900, 3283, 3702, 5353, 11211,
];

/// `[mitigation]`: what is done about an incident, and what never is.
#[derive(Debug, Clone, PartialEq)]
pub struct Mitigation {
    /// How long a ban lasts.
    pub ban_duration: Duration,
    /// Mitigate, or only detect and report what would be done.
    pub(crate) mode: Mode,
    /// New bans a second at most.
    pub(crate) max_bans_per_second: u32,
    /// In a concentrated flood, a source carrying at least this share of the
    /// sampled packets is banned.
    pub(crate) min_source_share: f64,
    /// When this many banned sources share a /24 (IPv6 /64), the prefix is
    /// banned instead.
    pub(crate) prefix_after: u32,
    /// Add the host's own addresses, default gateways, DNS resolvers and the
    /// peers of established SSH sessions to the safelist at start.
    pub(crate) auto_safelist: bool,
    /// The port whose established peers `auto_safelist` keeps.
    pub(crate) ssh_port: u16,
    /// During a distributed flood, the attacked port is held to this many
    /// packets a second, all sources together.
    pub(crate) port_limit_pps: u32,
    /// During a distributed flood on a port, each source is metered: its
    /// packets to that port past this many a second are dropped first,
    /// before the port limit.
    pub(crate) source_limit_pps: u32,
    /// During an HTTP flood on a web port, the new connections a second one
    /// source may open to it.
    pub(crate) new_connections_per_source: u32,
    /// During an ICMP flood, ICMP (or ICMPv6) is held to this many packets a
    /// second.
    pub(crate) icmp_limit_pps: u32,
    /// During a fragment flood, IP fragments are held to this many packets a
    /// second.
    pub(crate) fragment_limit_pps: u32,
    /// During a distributed flood to no single port, traffic to closed ports
    /// (no configured service, no socket of the host, no connection) is held
    /// to this many packets a second per transport, all sources together;
    /// 0 drops it.
    pub(crate) closed_port_limit_pps: u32,
    /// How long an aggregate measure (a port, ICMP or fragment limit, a
    /// reflector-port block) stays in the kernel unless refreshed. It is
    /// refreshed while its incident lasts and removed when the incident ends.
    pub(crate) aggregate_duration: Duration,
    /// What a stop (SIGTERM) does with our bans and measures.
    pub(crate) on_stop: OnStop,
    /// A SYN flood on a service port is answered by the kernel's SYN proxy (nft `synproxy`)
    /// where the kernel has it; SYN cookies otherwise.
    pub(crate) synproxy: bool,
    /// The MSS the SYN proxy announces for IPv4 (IPv6: 20 less): the server's, i.e. the
    /// interface MTU less 40.
    pub(crate) synproxy_mss: u16,
    /// The window scale the SYN proxy announces: the server's (Linux: 7 with default buffers).
    pub(crate) synproxy_wscale: u8,
    /// Ports no measure ever limits (port limits, connection meters, the SYN proxy):
    /// per-source bans still apply.
    pub(crate) never_limit_ports: Vec<u16>,
}

impl Default for Mitigation {
    /// The descriptors' defaults (see `keys.rs`).
    fn default() -> Mitigation {
        Config::default().mitigation
    }
}

/// `mitigate` acts on incidents; `monitor` detects and reports what would be
/// done, and touches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    Mitigate,
    Monitor,
}

/// What `ftagent run` leaves in the kernel when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OnStop {
    /// The table stays: bans and measures run out their timeouts by themselves.
    Keep,
    /// The table is removed in one transaction, with every ban and measure in it.
    Remove,
}

/// `[nft]`: how we talk to the kernel and how big its sets are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nft {
    pub(crate) compat: Compat,
    /// The iptables `FTAGENT` chain mirroring our bans, and its backend.
    pub(crate) iptables_shim: IptablesShim,
    pub(crate) ban4_size: u32,
    pub(crate) ban6_size: u32,
    pub(crate) bannet4_size: u32,
    pub(crate) bannet6_size: u32,
}

/// `auto` probes the kernel; `legacy` forces the older-kernel mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Compat {
    Auto,
    Legacy,
}

/// `auto` puts the iptables `FTAGENT` chain in the backend the host's tools use (legacy when
/// the legacy tables are in use, else iptables-nft); `legacy`/`nft` force one; `off`: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IptablesShim {
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
    /// Every key's default, from its descriptor (`keys.rs`): the [`default_file`] read.
    fn default() -> Config {
        static DEFAULTS: LazyLock<Config> = LazyLock::new(descriptor::defaults);
        DEFAULTS.clone()
    }
}

impl Config {
    /// Restores in `fresh` the running values of the keys only a restart applies (the tick,
    /// the control socket, the table mode, the NFLOG groups, BGP, the metrics endpoint…: their
    /// descriptors say [`Reload::Restart`]) and names those that differed.
    pub(crate) fn keep_restart_only(fresh: &mut Config, running: &Config) -> Vec<String> {
        descriptor::keep_restart_only(fresh, running)
    }
}

impl Config {
    /// Parses TOML text; `origin` is only used to name the file in errors.
    pub(crate) fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
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
        let mut checker = check::Checker::default();
        let config = checker.document(document.get_ref(), Config::default());
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

#[cfg(test)]
mod tests;
