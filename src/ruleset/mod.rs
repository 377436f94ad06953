//! Our nft table as plain data: what we want in the kernel (`desired`), what the kernel reports
//! back (`TableState`, in `state`), and both rendered as nft text that `nft -c -f` accepts.
//! Nothing here touches the system; `rules/ftagent.nft` is the rendering of the default table.

pub mod change;
pub(crate) mod diff;
pub(crate) mod expr;
mod render;
pub(crate) mod shim;
mod state;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::addr::Cidr;
use crate::config::{Config, Proto};
use crate::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use expr::{
    CmpOp, Expr, Field, MetaKey, Stateful, Synproxy, Verdict, CT_STATE_ESTABLISHED,
    CT_STATE_INVALID, CT_STATE_NEW, CT_STATE_RELATED, CT_STATE_UNSOLICITED, CT_STATE_UNTRACKED,
    NFPROTO_IPV4, NFPROTO_IPV6,
};
pub(crate) use state::{
    bans_in, ChainState, CounterState, ElementState, HookState, RuleState, SetState, TableState,
};

/// The name of our table (family inet). Nobody else writes to it; we write nowhere else.
pub const TABLE: &str = "ftagent";
/// Our filter chain on the prerouting hook: accounting, sampling, bans, port-wide limits.
pub(crate) const CHAIN: &str = "prerouting";
/// Before raw (-300), conntrack (-200), Fail2Ban (-1), iptables (0) and firewalld (+10): a
/// dropped flood costs no conntrack entry.
pub(crate) const PRIORITY: i32 = -310;
/// Our second chain, after conntrack has classified the packet: new connections per port, and
/// the measures that must spare established connections.
pub(crate) const CT_CHAIN: &str = "conntrack";
pub(crate) const CT_PRIORITY: i32 = -190;
/// Our first chain, before conntrack's defragmentation (-400), which our `ct` rules turn on:
/// the only place a fragment is still a fragment. Fragments are counted and limited here.
pub(crate) const EARLY_CHAIN: &str = "early";
pub(crate) const EARLY_PRIORITY: i32 = -450;
/// Our chain on the input hook: traffic to closed ports (no service, no socket), which only
/// packets for this host reach — what is forwarded (Docker's published ports, DNAT) never does.
pub(crate) const CLOSED_CHAIN: &str = "closed";
pub(crate) const CLOSED_PRIORITY: i32 = -150;
/// Our chain on the input hook, where the `synproxy` statement is valid: SYNs to the ports of
/// `syn_proxy` answered with a SYN cookie. Before Fail2Ban (-1), iptables (0) and firewalld
/// (+10), whose `ct state invalid` drops would otherwise take the client's ACK first.
pub(crate) const SYNPROXY_CHAIN: &str = "syn_proxy";
pub(crate) const SYNPROXY_PRIORITY: i32 = -190;

/// The named counters that every table has (service and reflector ports add their own after
/// them): one list gives both a counter's name in the table and its index among the counters
/// the sensor reads (`sense::counters::CounterLayout`, where these come first, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Counter {
    Ipv4,
    Ipv6,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    TcpSyn,
    TcpAck,
    TcpRst,
    Fragment,
    /// TCP/UDP that is neither for a service port nor from a reflector port.
    Other,
    /// ACK-only packets (PSH allowed) in established connections (counted after conntrack):
    /// what of `tcp_ack` is traffic of real connections rather than an ACK flood.
    TcpAckEst,
    /// SYN-ACKs (ours to answer are few: the host's own outgoing connections).
    TcpSynack,
    /// TCP with none of SYN, RST and ACK (null, FIN-only, xmas…): no valid segment.
    TcpOdd,
    /// IP protocols other than TCP, UDP, ICMP and ICMPv6 (GRE, ESP, AH, SCTP…).
    L4Other,
}

impl Counter {
    /// Every fixed counter, in index order.
    pub(crate) const ALL: [Counter; 15] = [
        Counter::Ipv4,
        Counter::Ipv6,
        Counter::Tcp,
        Counter::Udp,
        Counter::Icmp,
        Counter::Icmpv6,
        Counter::TcpSyn,
        Counter::TcpAck,
        Counter::TcpRst,
        Counter::Fragment,
        Counter::Other,
        Counter::TcpAckEst,
        Counter::TcpSynack,
        Counter::TcpOdd,
        Counter::L4Other,
    ];

    /// Its index among the sensor's counters.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// Its name in the table (`counter name "…"`).
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Counter::Ipv4 => "l3_ipv4",
            Counter::Ipv6 => "l3_ipv6",
            Counter::Tcp => "l4_tcp",
            Counter::Udp => "l4_udp",
            Counter::Icmp => "l4_icmp",
            Counter::Icmpv6 => "l4_icmpv6",
            Counter::TcpSyn => "tcp_syn",
            Counter::TcpAck => "tcp_ack",
            Counter::TcpRst => "tcp_rst",
            Counter::Fragment => "fragment",
            Counter::Other => "other",
            Counter::TcpAckEst => "tcp_ack_est",
            Counter::TcpSynack => "tcp_synack",
            Counter::TcpOdd => "tcp_odd",
            Counter::L4Other => "l4_other",
        }
    }
}

/// The counter of a service port (range) for packets, or for new connections.
pub(crate) fn service_counter(proto: Proto, first: u16, last: u16, new: bool) -> String {
    let prefix = if new { "new_" } else { "" };
    if first == last {
        format!("{prefix}{proto}_{first}")
    } else {
        format!("{prefix}{proto}_{first}-{last}")
    }
}

/// The counter of UDP packets from a reflector's source port.
pub(crate) fn amplification_counter(port: u16) -> String {
    format!("amp_{port}")
}

/// The sets whose drop rules count what they drop in a named counter of their own
/// ([`drop_counter`]): bans, and the aggregate measures with the meters they switch on. What
/// the table dropped, not traffic to judge: never a detection key.
pub(crate) const DROP_SETS: [&str; 15] = [
    "ban4",
    "ban6",
    "bannet4",
    "bannet6",
    "limit_udp",
    "limit_tcp",
    "limit_proto",
    "limit_frag",
    Measure::REFLECTOR_SET,
    "meter_new",
    "limit_conns",
    "block_synack",
    "block_flags",
    Measure::CLOSED_SET,
    Measure::SYNPROXY_SET,
];

/// The named counter of the drop rules of `set`.
pub(crate) fn drop_counter(set: &str) -> String {
    format!("drop_{set}")
}

/// IPv4 or IPv6: the key type of a set and the network header a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(cidr: &Cidr) -> Family {
        if cidr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// The type of a set's keys, with nft's datatype number and the key length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    InetService,
    InetProto,
    NfProto,
}

impl KeyType {
    pub(crate) const ALL: [KeyType; 5] = [
        KeyType::Ipv4Addr,
        KeyType::Ipv6Addr,
        KeyType::InetService,
        KeyType::InetProto,
        KeyType::NfProto,
    ];

    pub(crate) fn nft_name(self) -> &'static str {
        match self {
            KeyType::Ipv4Addr => "ipv4_addr",
            KeyType::Ipv6Addr => "ipv6_addr",
            KeyType::InetService => "inet_service",
            KeyType::InetProto => "inet_proto",
            KeyType::NfProto => "nf_proto",
        }
    }

    pub(crate) fn type_id(self) -> u32 {
        match self {
            KeyType::NfProto => 2,
            KeyType::Ipv4Addr => 7,
            KeyType::Ipv6Addr => 8,
            KeyType::InetProto => 12,
            KeyType::InetService => 13,
        }
    }

    pub(crate) fn key_len(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 4,
            KeyType::Ipv6Addr => 16,
            KeyType::InetService => 2,
            KeyType::InetProto | KeyType::NfProto => 1,
        }
    }

    pub(crate) fn from_id(id: u32) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.type_id() == id)
    }
}

/// The key of an address set element: an address or prefix, or (in an interval set whose
/// neighbouring prefixes were merged) an inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ElementKey {
    Cidr(Cidr),
    Range(IpAddr, IpAddr),
}

impl ElementKey {
    /// The key for the addresses from `start` up to (not including) `end`; None runs to the top
    /// of the family. A single CIDR block when the range is one, else an inclusive range.
    pub(crate) fn from_interval(start: IpAddr, end: Option<IpAddr>) -> ElementKey {
        if let Some(c) = Cidr::from_interval(start, end) {
            return ElementKey::Cidr(c);
        }
        let last = match (start, end) {
            (IpAddr::V4(_), Some(IpAddr::V4(e))) => IpAddr::V4(u32::from(e).wrapping_sub(1).into()),
            (IpAddr::V6(_), Some(IpAddr::V6(e))) => {
                IpAddr::V6(u128::from(e).wrapping_sub(1).into())
            }
            (IpAddr::V4(_), _) => IpAddr::V4(u32::MAX.into()),
            (IpAddr::V6(_), _) => IpAddr::V6(u128::MAX.into()),
        };
        ElementKey::Range(start, last)
    }
}

impl fmt::Display for ElementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElementKey::Cidr(c) => write!(f, "{c}"),
            ElementKey::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// The key of any element of our sets and maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Addr(ElementKey),
    /// A port or an inclusive port range.
    Ports(u16, u16),
    /// A protocol number (inet_proto or nf_proto).
    Byte(u8),
}

impl Key {
    fn render(&self, key_type: KeyType) -> String {
        match (self, key_type) {
            (Key::Addr(a), _) => a.to_string(),
            (Key::Ports(a, b), _) if a == b => a.to_string(),
            (Key::Ports(a, b), _) => format!("{a}-{b}"),
            (Key::Byte(NFPROTO_IPV4), KeyType::NfProto) => "ipv4".to_string(),
            (Key::Byte(NFPROTO_IPV6), KeyType::NfProto) => "ipv6".to_string(),
            (Key::Byte(b), _) => expr::l4proto_name(*b),
        }
    }
}

/// The role of an address set, which fixes its name, key family and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRole {
    /// Never banned or metered: the ban and per-source meter rules skip these sources
    /// (`ip saddr != @allow4`); port-wide measures apply to them like to anyone.
    Allow(Family),
    /// Single banned addresses, each with a timeout.
    Ban(Family),
    /// Banned prefixes, each with a timeout.
    BanNet(Family),
}

impl SetRole {
    pub(crate) const ALL: [SetRole; 6] = [
        SetRole::Allow(Family::V4),
        SetRole::Allow(Family::V6),
        SetRole::Ban(Family::V4),
        SetRole::Ban(Family::V6),
        SetRole::BanNet(Family::V4),
        SetRole::BanNet(Family::V6),
    ];
    /// The sets that hold bans.
    pub(crate) const BANS: [SetRole; 4] = [
        SetRole::Ban(Family::V4),
        SetRole::Ban(Family::V6),
        SetRole::BanNet(Family::V4),
        SetRole::BanNet(Family::V6),
    ];

    pub fn name(self) -> &'static str {
        match self {
            SetRole::Allow(Family::V4) => "allow4",
            SetRole::Allow(Family::V6) => "allow6",
            SetRole::Ban(Family::V4) => "ban4",
            SetRole::Ban(Family::V6) => "ban6",
            SetRole::BanNet(Family::V4) => "bannet4",
            SetRole::BanNet(Family::V6) => "bannet6",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<SetRole> {
        SetRole::ALL.into_iter().find(|r| r.name() == name)
    }

    pub(crate) fn family(self) -> Family {
        match self {
            SetRole::Allow(f) | SetRole::Ban(f) | SetRole::BanNet(f) => f,
        }
    }

    pub(crate) fn interval(self) -> bool {
        !matches!(self, SetRole::Ban(_))
    }

    pub(crate) fn timeout(self) -> bool {
        !matches!(self, SetRole::Allow(_))
    }

    pub(crate) fn key_type(self) -> KeyType {
        match self.family() {
            Family::V4 => KeyType::Ipv4Addr,
            Family::V6 => KeyType::Ipv6Addr,
        }
    }

    /// The set a ban of this CIDR belongs in: a host goes to `ban4`/`ban6`, a prefix to
    /// `bannet4`/`bannet6`.
    pub fn for_ban(cidr: &Cidr) -> SetRole {
        let family = Family::of(cidr);
        if cidr.is_host() {
            SetRole::Ban(family)
        } else {
            SetRole::BanNet(family)
        }
    }
}

/// A set or counter map as we declare it. Counter maps carry their elements (key → counter);
/// address sets are filled at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetSpec {
    pub(crate) name: String,
    pub(crate) key: KeyType,
    pub(crate) interval: bool,
    pub(crate) timeout: bool,
    /// Maximum number of elements (`size`); None where unbounded.
    pub(crate) size: Option<u32>,
    /// A map from key to named counter (`type … : counter`).
    pub(crate) counter_map: bool,
    /// Filled by the rules themselves (`flags dynamic`: meters).
    pub(crate) dynamic: bool,
    /// The timeout of elements added without one.
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) elements: Vec<(Key, String)>,
}

impl SetSpec {
    pub(crate) fn for_role(role: SetRole, size: Option<u32>) -> SetSpec {
        SetSpec {
            name: role.name().to_string(),
            key: role.key_type(),
            interval: role.interval(),
            timeout: role.timeout(),
            size,
            counter_map: false,
            dynamic: false,
            default_timeout: None,
            elements: Vec::new(),
        }
    }

    fn counter_map(
        name: &str,
        key: KeyType,
        interval: bool,
        elements: Vec<(Key, String)>,
    ) -> SetSpec {
        SetSpec {
            name: name.to_string(),
            key,
            interval,
            timeout: false,
            size: None,
            counter_map: true,
            dynamic: false,
            default_timeout: None,
            elements,
        }
    }
}

/// The netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainHook {
    Prerouting,
    /// Packets for this host, after routing.
    Input,
}

impl ChainHook {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ChainHook::Prerouting => "prerouting",
            ChainHook::Input => "input",
        }
    }
}

/// A base chain as we declare it: filter type, policy accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainSpec {
    pub(crate) name: &'static str,
    pub(crate) hook: ChainHook,
    pub(crate) priority: i32,
    pub(crate) rules: Vec<Vec<Expr>>,
}

/// The whole table as we want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableSpec {
    pub(crate) counters: Vec<String>,
    pub(crate) sets: Vec<SetSpec>,
    pub(crate) chains: Vec<ChainSpec>,
}

/// The table the configuration asks for.
pub(crate) fn desired(config: &Config) -> TableSpec {
    let (counters, mut sets) = counters_and_maps(config);
    sets.extend(element_sets(config));
    let prerouting = prerouting_rules(config, &mut sets);
    let conntrack = conntrack_rules(config);
    let mut spec = TableSpec {
        counters,
        sets,
        chains: vec![
            ChainSpec {
                name: EARLY_CHAIN,
                hook: ChainHook::Prerouting,
                priority: EARLY_PRIORITY,
                rules: early_rules(config),
            },
            ChainSpec {
                name: CHAIN,
                hook: ChainHook::Prerouting,
                priority: PRIORITY,
                rules: prerouting,
            },
            ChainSpec {
                name: CT_CHAIN,
                hook: ChainHook::Prerouting,
                priority: CT_PRIORITY,
                rules: conntrack,
            },
            ChainSpec {
                name: CLOSED_CHAIN,
                hook: ChainHook::Input,
                priority: CLOSED_PRIORITY,
                rules: closed_port_rules(config),
            },
        ],
    };
    if config.mitigation.synproxy {
        spec.chains.push(ChainSpec {
            name: SYNPROXY_CHAIN,
            hook: ChainHook::Input,
            priority: SYNPROXY_PRIORITY,
            rules: synproxy_rules(config),
        });
    }
    spec
}

/// Every named counter, in order, and the verdict maps that count into them: per address
/// family, per IP protocol, per service (all packets and new connections) and per reflector
/// port.
fn counters_and_maps(config: &Config) -> (Vec<String>, Vec<SetSpec>) {
    let mut counters: Vec<String> = Counter::ALL.iter().map(|c| c.name().to_string()).collect();
    let mut svc = |proto: Proto, new: bool| -> Vec<(Key, String)> {
        let elements: Vec<(Key, String)> = config
            .services
            .iter()
            .filter(|s| s.proto == proto)
            .map(|s| {
                let name = service_counter(proto, s.ports.first, s.ports.last, new);
                (Key::Ports(s.ports.first, s.ports.last), name)
            })
            .collect();
        counters.extend(elements.iter().map(|(_, c)| c.clone()));
        elements
    };
    let svc_tcp = svc(Proto::Tcp, false);
    let svc_udp = svc(Proto::Udp, false);
    let new_tcp = svc(Proto::Tcp, true);
    let new_udp = svc(Proto::Udp, true);
    let amp: Vec<(Key, String)> = config
        .sense
        .amplification_ports
        .iter()
        .map(|&p| (Key::Ports(p, p), amplification_counter(p)))
        .collect();
    counters.extend(amp.iter().map(|(_, c)| c.clone()));
    counters.extend(DROP_SETS.iter().map(|set| drop_counter(set)));

    let el = |b: u8, name: &str| (Key::Byte(b), name.to_string());
    let sets = vec![
        SetSpec::counter_map(
            "family",
            KeyType::NfProto,
            false,
            vec![
                el(NFPROTO_IPV4, Counter::Ipv4.name()),
                el(NFPROTO_IPV6, Counter::Ipv6.name()),
            ],
        ),
        SetSpec::counter_map(
            "l4proto",
            KeyType::InetProto,
            false,
            vec![
                el(IPPROTO_TCP, Counter::Tcp.name()),
                el(IPPROTO_UDP, Counter::Udp.name()),
                el(IPPROTO_ICMP, Counter::Icmp.name()),
                el(IPPROTO_ICMPV6, Counter::Icmpv6.name()),
            ],
        ),
        SetSpec::counter_map("svc_tcp", KeyType::InetService, true, svc_tcp),
        SetSpec::counter_map("svc_udp", KeyType::InetService, true, svc_udp),
        SetSpec::counter_map("amp_udp", KeyType::InetService, false, amp),
        SetSpec::counter_map("new_tcp", KeyType::InetService, true, new_tcp),
        SetSpec::counter_map("new_udp", KeyType::InetService, true, new_udp),
    ];
    (counters, sets)
}

/// The sets the daemon and the kernel fill: the safelist and the bans (sized from `[nft]`),
/// the per-source meters, and the measures' sets.
fn element_sets(config: &Config) -> Vec<SetSpec> {
    let mut sets = Vec::new();
    let nft = &config.nft;
    for role in SetRole::ALL {
        let size = match role {
            SetRole::Allow(_) => None,
            SetRole::Ban(Family::V4) => Some(nft.ban4_size),
            SetRole::Ban(Family::V6) => Some(nft.ban6_size),
            SetRole::BanNet(Family::V4) => Some(nft.bannet4_size),
            SetRole::BanNet(Family::V6) => Some(nft.bannet6_size),
        };
        sets.push(SetSpec::for_role(role, size));
    }
    for (name, key, timeout) in METERS {
        sets.push(SetSpec {
            name: name.to_string(),
            key,
            interval: false,
            timeout: timeout.is_some(),
            size: Some(METER_SIZE),
            counter_map: false,
            dynamic: true,
            default_timeout: timeout,
            elements: Vec::new(),
        });
    }
    sets.extend(Measure::SETS.iter().map(|&(name, key, size)| SetSpec {
        name: name.to_string(),
        key,
        interval: false,
        timeout: true,
        size: Some(size),
        counter_map: false,
        dynamic: false,
        default_timeout: None,
        elements: Vec::new(),
    }));
    sets
}

/// The main chain's rules: accounting, sampling, the SYN proxy's notrack, bans, aggregate
/// measures, and last the tripwire (whose sets go into `sets`).
fn prerouting_rules(config: &Config, sets: &mut Vec<SetSpec>) -> Vec<Vec<Expr>> {
    let mut prerouting = accounting_rules();
    let sense = &config.sense;
    prerouting.push(vec![
        Expr::Limit {
            rate: u64::from(sense.sample_rate),
            burst: (sense.sample_rate / 10).max(1),
            over: false,
        },
        Expr::Log {
            group: sense.nflog_group,
            snaplen: sense.snaplen,
            qthreshold: 0,
        },
    ]);
    // The SYN proxy's notrack is for every source.
    if config.mitigation.synproxy {
        prerouting.push(synproxy_notrack());
    }
    prerouting.extend(SetRole::BANS.into_iter().map(ban_rule));
    prerouting.extend(aggregate_rules(config));
    // Last: only what nothing above has dropped trips the wire.
    if let Some((rule, tripwire_sets)) = tripwire(config) {
        prerouting.push(rule);
        sets.extend(tripwire_sets);
    }
    prerouting
}

/// The conntrack chain's rules: new connections counted per service, established ACKs,
/// unsolicited reflector replies and SYN-ACKs, packets outside any connection, and the
/// per-source meters on new connections.
fn conntrack_rules(config: &Config) -> Vec<Vec<Expr>> {
    let ct_new = || ct_state(CT_STATE_NEW);
    let mut conntrack: Vec<Vec<Expr>> = [
        (IPPROTO_TCP, Field::TcpDport, "new_tcp"),
        (IPPROTO_UDP, Field::UdpDport, "new_udp"),
    ]
    .into_iter()
    .map(|(proto, field, map)| {
        let mut rule = ct_new();
        rule.extend(Expr::meta_is(MetaKey::L4Proto, proto));
        rule.extend([Expr::Payload(field), Expr::CounterMap(map.to_string())]);
        rule
    })
    .collect();
    // ACKs of established connections: the part of `tcp_ack` that is no ACK flood.
    let mut established = ct_state(CT_STATE_ESTABLISHED);
    established.extend(tcp_flags(FIN | SYN | RST | ACK, ACK));
    established.push(Expr::NamedCounter(Counter::TcpAckEst.name().into()));
    conntrack.push(established);
    // Unsolicited UDP from a blocked reflector port: replies to our own queries are not `new`.
    let mut reflected = ct_new();
    reflected.extend(Expr::meta_is(MetaKey::L4Proto, IPPROTO_UDP));
    reflected.extend([
        Expr::Payload(Field::UdpSport),
        Expr::Lookup {
            set: Measure::REFLECTOR_SET.to_string(),
            invert: false,
        },
        Expr::NamedCounter(drop_counter(Measure::REFLECTOR_SET)),
        Expr::Verdict(Verdict::Drop),
    ]);
    conntrack.push(reflected);
    // SYN-ACKs that belong to no connection of ours (reflection), once a measure asks.
    let mut synacks = ct_state(CT_STATE_UNSOLICITED);
    synacks.extend(block_head("block_synack"));
    synacks.extend(tcp_flags(SYN | RST | ACK, SYN | ACK));
    synacks.extend(drop_tail("block_synack"));
    conntrack.push(synacks);
    conntrack.extend(outside_connection_rules(config));
    conntrack.extend(new_connection_meter_rules(config));
    conntrack
}

/// New TCP connections to a port in `meter_new` or `limit_conns`, metered per source
/// (`mitigation.new_connections_per_source`, `detection.max_connections_per_source`).
fn new_connection_meter_rules(config: &Config) -> Vec<Vec<Expr>> {
    let ct_new = || ct_state(CT_STATE_NEW);
    let mut rules = Vec::new();
    for (set, meter, stateful) in [
        (
            "meter_new",
            "newconn",
            Stateful::Limit {
                rate: u64::from(config.mitigation.new_connections_per_source),
                burst: (config.mitigation.new_connections_per_source / 4).max(5),
                over: true,
            },
        ),
        (
            "limit_conns",
            "conns",
            Stateful::ConnLimit {
                count: config.detection.max_connections_per_source,
                over: true,
            },
        ),
    ] {
        let mut head = ct_new();
        head.extend(Expr::meta_is(MetaKey::L4Proto, IPPROTO_TCP));
        head.extend([
            Expr::Payload(Field::TcpDport),
            Expr::Lookup {
                set: set.to_string(),
                invert: false,
            },
        ]);
        rules.extend(meter_rules(&head, meter, stateful, set));
    }
    rules
}

/// `tcp flags syn / fin,syn,rst,ack tcp dport @syn_proxy notrack`: a SYN to a port under the
/// SYN proxy makes no conntrack entry. (The SYN the proxy itself sends on to the local server
/// comes back through this chain on `lo` with its conntrack entry already made: `notrack`
/// leaves such a packet alone.)
fn synproxy_notrack() -> Vec<Expr> {
    let mut rule = tcp_flags(FIN | SYN | RST | ACK, SYN);
    rule.extend([
        Expr::Payload(Field::TcpDport),
        Expr::Lookup {
            set: Measure::SYNPROXY_SET.to_string(),
            invert: false,
        },
        Expr::Notrack,
    ]);
    rule
}

/// The SYN proxy's chain (as the kernel's documentation has it): to a port a measure put in
/// `syn_proxy`, an untracked SYN is answered with a SYN cookie and an ACK no connection knows
/// (`invalid`: `nf_conntrack_tcp_loose` is 0 meanwhile) is checked against its cookie; a
/// valid one opens the connection to the local server. What is left invalid is dropped. The
/// MSS announced is `mitigation.synproxy_mss` for IPv4, 20 less for IPv6 (its header is 20
/// bytes longer).
fn synproxy_rules(config: &Config) -> Vec<Vec<Expr>> {
    let m = &config.mitigation;
    let to_port = || {
        let mut head = Expr::meta_is(MetaKey::L4Proto, IPPROTO_TCP).to_vec();
        head.extend([
            Expr::Payload(Field::TcpDport),
            Expr::Lookup {
                set: Measure::SYNPROXY_SET.to_string(),
                invert: false,
            },
        ]);
        head
    };
    let mut rules: Vec<Vec<Expr>> = [
        (NFPROTO_IPV4, m.synproxy_mss),
        (NFPROTO_IPV6, m.synproxy_mss - 20),
    ]
    .into_iter()
    .map(|(nfproto, mss)| {
        let mut rule = Expr::meta_is(MetaKey::NfProto, nfproto).to_vec();
        rule.extend(to_port());
        rule.extend(ct_state(CT_STATE_INVALID | CT_STATE_UNTRACKED));
        rule.extend([
            Expr::NamedCounter(drop_counter(Measure::SYNPROXY_SET)),
            Expr::Synproxy(Synproxy {
                mss,
                wscale: m.synproxy_wscale,
                timestamp: true,
                sack_perm: true,
            }),
        ]);
        rule
    })
    .collect();
    let mut invalid = to_port();
    invalid.extend(ct_state(CT_STATE_INVALID));
    invalid.extend(drop_tail(Measure::SYNPROXY_SET));
    rules.push(invalid);
    rules
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// `ct state <mask>` (any of its states).
fn ct_state(mask: u32) -> Vec<Expr> {
    vec![
        Expr::CtState,
        Expr::Bitwise(mask.to_ne_bytes().to_vec()),
        Expr::Cmp(CmpOp::Neq, vec![0; 4]),
    ]
}

/// `meta l4proto tcp tcp flags & (<mask>) == <value>`.
fn tcp_flags(mask: u8, value: u8) -> Vec<Expr> {
    let mut rule = Expr::meta_is(MetaKey::L4Proto, IPPROTO_TCP).to_vec();
    rule.extend([
        Expr::Payload(Field::TcpFlags),
        Expr::Bitwise(vec![mask]),
        Expr::Cmp(CmpOp::Eq, vec![value]),
    ]);
    rule
}

/// `meta nfproto @<set>`: the rule applies to the families a measure put in `set`.
fn block_head(set: &str) -> [Expr; 2] {
    [
        Expr::Meta(MetaKey::NfProto),
        Expr::Lookup {
            set: set.to_string(),
            invert: false,
        },
    ]
}

/// `counter name "drop_<set>" drop`.
fn drop_tail(set: &str) -> [Expr; 2] {
    [
        Expr::NamedCounter(drop_counter(set)),
        Expr::Verdict(Verdict::Drop),
    ]
}

/// Counting rules that run before any verdict, so dropped traffic is counted too.
fn accounting_rules() -> Vec<Vec<Expr>> {
    let tcp = || Expr::meta_is(MetaKey::L4Proto, IPPROTO_TCP).to_vec();
    let udp = || Expr::meta_is(MetaKey::L4Proto, IPPROTO_UDP).to_vec();
    let with = |mut head: Vec<Expr>, tail: Vec<Expr>| {
        head.extend(tail);
        head
    };
    let flags = |mask: u8, value: u8, name: &str| {
        with(
            tcp_flags(mask, value),
            vec![Expr::NamedCounter(name.to_string())],
        )
    };
    let (fin, syn, rst, ack) = (FIN, SYN, RST, ACK);
    vec![
        vec![
            Expr::Meta(MetaKey::NfProto),
            Expr::CounterMap("family".into()),
        ],
        vec![
            Expr::Meta(MetaKey::L4Proto),
            Expr::CounterMap("l4proto".into()),
        ],
        flags(syn | ack, syn, Counter::TcpSyn.name()),
        flags(syn | rst, rst, Counter::TcpRst.name()),
        flags(fin | syn | rst | ack, ack, Counter::TcpAck.name()),
        flags(syn | rst | ack, syn | ack, Counter::TcpSynack.name()),
        flags(syn | rst | ack, 0, Counter::TcpOdd.name()),
        vec![
            Expr::Meta(MetaKey::L4Proto),
            Expr::Lookup {
                set: "l4proto".into(),
                invert: true,
            },
            Expr::NamedCounter(Counter::L4Other.name().into()),
        ],
        with(
            tcp(),
            vec![
                Expr::Payload(Field::TcpDport),
                Expr::CounterMap("svc_tcp".into()),
            ],
        ),
        with(
            udp(),
            vec![
                Expr::Payload(Field::UdpDport),
                Expr::CounterMap("svc_udp".into()),
            ],
        ),
        with(
            udp(),
            vec![
                Expr::Payload(Field::UdpSport),
                Expr::CounterMap("amp_udp".into()),
            ],
        ),
        with(
            tcp(),
            vec![
                Expr::Payload(Field::TcpDport),
                Expr::Lookup {
                    set: "svc_tcp".into(),
                    invert: true,
                },
                Expr::NamedCounter(Counter::Other.name().into()),
            ],
        ),
        with(
            udp(),
            vec![
                Expr::Payload(Field::UdpDport),
                Expr::Lookup {
                    set: "svc_udp".into(),
                    invert: true,
                },
                Expr::Payload(Field::UdpSport),
                Expr::Lookup {
                    set: "amp_udp".into(),
                    invert: true,
                },
                Expr::NamedCounter(Counter::Other.name().into()),
            ],
        ),
    ]
}

/// `limit rate over R/second burst R/10 packets counter name "drop_<set>" drop`: the tail
/// of a rate limit that a measure set switches on.
fn limit_tail(rate: u32, set: &str) -> [Expr; 3] {
    [
        Expr::Limit {
            rate: u64::from(rate),
            burst: (rate / 10).max(5),
            over: true,
        },
        Expr::NamedCounter(drop_counter(set)),
        Expr::Verdict(Verdict::Drop),
    ]
}

/// The per-source meter of the port limits: `limit rate over source_limit_pps`.
fn per_source_limit(config: &Config) -> Stateful {
    let rate = config.mitigation.source_limit_pps;
    Stateful::Limit {
        rate: u64::from(rate),
        burst: (rate / 10).max(5),
        over: true,
    }
}

/// `<match> <set lookup>` followed by the per-source meter rules, then the port as a whole held
/// to `port_limit_pps`: the heaviest (non-safelisted) sources dropped first.
fn port_limit_rules(config: &Config, head: Vec<Expr>, set: &str) -> Vec<Vec<Expr>> {
    let mut rules = meter_rules(&head, "meter", per_source_limit(config), set);
    let mut rule = head;
    rule.extend(limit_tail(config.mitigation.port_limit_pps, set));
    rules.push(rule);
    rules
}

/// Rate limits that aggregate measures switch on by adding a key (with a timeout) to their
/// set: the attacked UDP port, ICMP or another IP protocol (fragments: `early_rules`; a TCP
/// port: `outside_connection_rules`, after conntrack). Packets past the rate are dropped,
/// whatever their source. Last, TCP with odd flags, dropped whole once a measure puts its
/// family in `block_flags`: before conntrack, since no segment of a connection (nor any valid
/// segment) has none of SYN, RST and ACK.
fn aggregate_rules(config: &Config) -> Vec<Vec<Expr>> {
    let m = &config.mitigation;
    let mut head = Expr::meta_is(MetaKey::L4Proto, IPPROTO_UDP).to_vec();
    head.extend([
        Expr::Payload(Field::UdpDport),
        Expr::Lookup {
            set: "limit_udp".to_string(),
            invert: false,
        },
    ]);
    let mut rules = port_limit_rules(config, head, "limit_udp");
    let mut icmp = vec![
        Expr::Meta(MetaKey::L4Proto),
        Expr::Lookup {
            set: "limit_proto".into(),
            invert: false,
        },
    ];
    icmp.extend(limit_tail(m.icmp_limit_pps, "limit_proto"));
    rules.push(icmp);
    // TCP that no valid segment looks like (no SYN, RST or ACK): nothing to lose.
    let mut odd = block_head("block_flags").to_vec();
    odd.extend(tcp_flags(SYN | RST | ACK, 0));
    odd.extend(drop_tail("block_flags"));
    rules.push(odd);
    rules
}

/// The closed-port limit (chain `closed`, on the input hook: only packets for this host),
/// switched on per transport by a measure putting TCP or UDP in `limit_closed`. A packet is
/// closed-port traffic when it belongs to no connection (`ct state` neither established nor
/// related: replies to the host's own lookups and downloads pass), is for no configured
/// service, and no socket of the host would take it — the kernel's own socket lookup
/// (`socket transparent` matches 0 or 1 when a socket is found, nothing when none is), so a
/// service started during the incident is open at once. What is left is held to
/// `mitigation.closed_port_limit_pps` per transport (0: dropped), from every source: the
/// safelist does not exempt a port-wide measure.
fn closed_port_rules(config: &Config) -> Vec<Vec<Expr>> {
    let set = Measure::CLOSED_SET;
    let l4 = |proto| Expr::meta_is(MetaKey::L4Proto, proto).to_vec();
    let ret = Expr::Verdict(Verdict::Return);
    let mut off = vec![
        Expr::Meta(MetaKey::L4Proto),
        Expr::Lookup {
            set: set.to_string(),
            invert: true,
        },
    ];
    off.push(ret.clone());
    let mut connected = ct_state(CT_STATE_ESTABLISHED | CT_STATE_RELATED);
    connected.push(ret.clone());
    let mut rules = vec![off, connected];
    for (proto, field, services) in [
        (IPPROTO_TCP, Field::TcpDport, "svc_tcp"),
        (IPPROTO_UDP, Field::UdpDport, "svc_udp"),
    ] {
        let mut rule = l4(proto);
        rule.extend([
            Expr::Payload(field),
            Expr::Lookup {
                set: services.to_string(),
                invert: false,
            },
            ret.clone(),
        ]);
        rules.push(rule);
    }
    rules.push(vec![
        Expr::SocketTransparent,
        Expr::Cmp(CmpOp::Lte, vec![1]),
        ret,
    ]);
    let rate = config.mitigation.closed_port_limit_pps;
    for proto in [IPPROTO_TCP, IPPROTO_UDP] {
        let mut rule = l4(proto);
        if rate > 0 {
            rule.push(Expr::Limit {
                rate: u64::from(rate),
                burst: (rate / 10).max(5),
                over: true,
            });
        }
        rule.extend(drop_tail(set));
        rules.push(rule);
    }
    rules
}

/// The TCP port limit (`limit_tcp`: ACK, RST and other non-SYN floods), after conntrack so that
/// it holds only segments outside any connection: `ct state invalid,new,untracked` (a random
/// ACK is `new` where `nf_conntrack_tcp_loose` picks it up, `invalid` where it does not; RSTs
/// and odd flags outside a connection are `invalid`) and not a plain SYN (`tcp flags & (fin |
/// syn | rst | ack) != syn`: new connections are a SYN flood's measures' business). Segments of
/// established connections pass untouched, whoever else floods the port. A port under the SYN
/// proxy is left to it: its clients' handshake-completing ACKs are outside any connection until
/// the proxy checks their cookies (and drops the ACKs that carry none).
fn outside_connection_rules(config: &Config) -> Vec<Vec<Expr>> {
    let mut head = ct_state(CT_STATE_UNSOLICITED);
    head.extend(Expr::meta_is(MetaKey::L4Proto, IPPROTO_TCP));
    head.extend([
        Expr::Payload(Field::TcpDport),
        Expr::Lookup {
            set: "limit_tcp".to_string(),
            invert: false,
        },
    ]);
    if config.mitigation.synproxy {
        head.extend([
            Expr::Payload(Field::TcpDport),
            Expr::Lookup {
                set: Measure::SYNPROXY_SET.to_string(),
                invert: true,
            },
        ]);
    }
    head.extend([
        Expr::Payload(Field::TcpFlags),
        Expr::Bitwise(vec![FIN | SYN | RST | ACK]),
        Expr::Cmp(CmpOp::Neq, vec![SYN]),
    ]);
    port_limit_rules(config, head, "limit_tcp")
}

/// Each family's fragment match: an IPv4 packet with an offset or more-fragments bit, an IPv6
/// packet with a fragment header.
fn fragment_matches() -> [(u8, Vec<Expr>); 2] {
    [
        (
            NFPROTO_IPV4,
            vec![
                Expr::Payload(Field::Ip4FragOff),
                Expr::Bitwise(0x3fffu16.to_be_bytes().to_vec()),
                Expr::Cmp(CmpOp::Neq, vec![0, 0]),
            ],
        ),
        (
            NFPROTO_IPV6,
            vec![Expr::Exthdr6Frag, Expr::Cmp(CmpOp::Eq, vec![1])],
        ),
    ]
}

/// The early chain (before reassembly): every fragment counted; then the fragments of banned
/// sources dropped (the prerouting chain sees only what reassembly made of them, after it held
/// each in a queue); then the fragment limit, which an aggregate measure switches on per
/// family (set `limit_frag`) for every source, safelisted ones too.
fn early_rules(config: &Config) -> Vec<Vec<Expr>> {
    let mut rules: Vec<Vec<Expr>> = fragment_matches()
        .into_iter()
        .map(|(nfproto, matches)| {
            let mut rule = Expr::meta_is(MetaKey::NfProto, nfproto).to_vec();
            rule.extend(matches);
            rule.push(Expr::NamedCounter(Counter::Fragment.name().into()));
            rule
        })
        .collect();
    for role in SetRole::BANS {
        let [v4, v6] = fragment_matches();
        let (_, matches) = if role.family() == Family::V4 { v4 } else { v6 };
        // `meta nfproto X` first, then the fragment match, then the address lookups.
        let mut rule = ban_rule(role);
        rule.splice(2..2, matches);
        rules.push(rule);
    }
    let rate = config.mitigation.fragment_limit_pps;
    for (nfproto, matches) in fragment_matches() {
        let mut rule = vec![
            Expr::Meta(MetaKey::NfProto),
            Expr::Lookup {
                set: "limit_frag".into(),
                invert: false,
            },
        ];
        rule.extend(Expr::meta_is(MetaKey::NfProto, nfproto));
        rule.extend(matches);
        rule.extend([
            Expr::Limit {
                rate: u64::from(rate),
                burst: (rate / 10).max(5),
                over: true,
            },
            Expr::NamedCounter(drop_counter("limit_frag")),
            Expr::Verdict(Verdict::Drop),
        ]);
        rules.push(rule);
    }
    rules
}

/// The tripwire's sets: per IP protocol, its rate meter, and the protocols that tripped it in
/// the last second (which throttles it to one message a second per protocol).
pub(crate) const TRIP_METER: &str = "trip_meter";
pub(crate) const TRIPPED: &str = "tripped";

/// `meta l4proto != @tripped add @trip_meter { meta l4proto limit rate over R/second burst B
/// packets } add @tripped { meta l4proto } log group G snaplen 64 queue-threshold 1`: one
/// message the moment an IP protocol's traffic that no ban or limit has dropped runs at
/// `instant_factor × floor_pps` (R), sent at once (queue threshold 1: no batching delay).
/// It only wakes the agent; the counters of a short tick decide (see `daemon`). The burst, a
/// millisecond of R, keeps it from tripping on a few back-to-back packets. None when
/// `detection.instant_factor` is 0.
fn tripwire(config: &Config) -> Option<(Vec<Expr>, [SetSpec; 2])> {
    let factor = config.detection.instant_factor;
    if factor <= 0.0 {
        return None;
    }
    let rate = (factor * config.detection.floor_pps as f64).min(u32::MAX as f64) as u64;
    let burst = u32::try_from(rate / 1000).unwrap_or(u32::MAX).max(5);
    let l4 = || Expr::Meta(MetaKey::L4Proto);
    let rule = vec![
        l4(),
        Expr::Lookup {
            set: TRIPPED.to_string(),
            invert: true,
        },
        l4(),
        Expr::Dynset {
            set: TRIP_METER.to_string(),
            stateful: Stateful::Limit {
                rate,
                burst,
                over: true,
            },
        },
        l4(),
        Expr::SetAdd(TRIPPED.to_string()),
        Expr::Log {
            group: config.sense.tripwire_group,
            snaplen: TRIP_SNAPLEN,
            qthreshold: 1,
        },
    ];
    let set = |name: &str, timeout: u64| SetSpec {
        name: name.to_string(),
        key: KeyType::InetProto,
        interval: false,
        timeout: true,
        size: Some(256),
        counter_map: false,
        dynamic: true,
        default_timeout: Some(Duration::from_secs(timeout)),
        elements: Vec::new(),
    };
    Some((rule, [set(TRIP_METER, 60), set(TRIPPED, 1)]))
}

/// Bytes of the packet that tripped the wire: its headers, for the log line.
const TRIP_SNAPLEN: u32 = 64;

/// Elements a meter holds at most.
const METER_SIZE: u32 = 65536;
/// Meters: per-source state kept by the rules. Rate meters forget a quiet source after a
/// minute; connection counts go when the connections do.
const METERS: [(&str, KeyType, Option<Duration>); 6] = [
    ("meter4", KeyType::Ipv4Addr, Some(Duration::from_secs(60))),
    ("meter6", KeyType::Ipv6Addr, Some(Duration::from_secs(60))),
    ("newconn4", KeyType::Ipv4Addr, Some(Duration::from_secs(60))),
    ("newconn6", KeyType::Ipv6Addr, Some(Duration::from_secs(60))),
    ("conns4", KeyType::Ipv4Addr, None),
    ("conns6", KeyType::Ipv6Addr, None),
];

/// `<match> meta nfproto X ip saddr != @allow4 add @<meter><4|6> { ip[6] saddr <stateful> }
/// counter name "drop_<set>" drop`, for both families: per-source state, the heaviest sources
/// dropped and counted with the rest of what `set` switches on. A safelisted source never
/// enters a meter.
fn meter_rules(head: &[Expr], meter: &str, stateful: Stateful, set: &str) -> Vec<Vec<Expr>> {
    [(Family::V4, "4"), (Family::V6, "6")]
        .into_iter()
        .map(|(family, suffix)| {
            let (nfproto, field) = family_source(family);
            let mut rule = head.to_vec();
            rule.extend(Expr::meta_is(MetaKey::NfProto, nfproto));
            rule.extend(not_safelisted(family));
            rule.extend([
                Expr::Payload(field),
                Expr::Dynset {
                    set: format!("{meter}{suffix}"),
                    stateful,
                },
                Expr::NamedCounter(drop_counter(set)),
                Expr::Verdict(Verdict::Drop),
            ]);
            rule
        })
        .collect()
}

/// An aggregate measure: one key in one of the measure sets, switching on its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Drop unsolicited UDP from this reflector source port.
    BlockReflector(u16),
    /// Hold this UDP port to `mitigation.port_limit_pps`.
    LimitUdpPort(u16),
    /// Hold this TCP port's segments outside any connection (not SYNs) to
    /// `mitigation.port_limit_pps`; established connections pass untouched.
    LimitTcpPort(u16),
    /// Hold this IP protocol (ICMP, ICMPv6) to `mitigation.icmp_limit_pps`.
    LimitProto(u8),
    /// Hold this family's fragments (nfproto) to `mitigation.fragment_limit_pps`.
    LimitFragments(u8),
    /// Meter new connections per source to this web port (`new_connections_per_source`).
    MeterNewConnections(u16),
    /// Limit the connections one source holds to this port (`max_connections_per_source`).
    LimitConnections(u16),
    /// Drop this family's (nfproto) SYN-ACKs that belong to no connection of ours.
    BlockSynAcks(u8),
    /// Drop this family's TCP packets with none of SYN, RST and ACK (null, FIN, xmas…).
    BlockOddFlags(u8),
    /// Hold this transport's (TCP, UDP) traffic to closed ports to
    /// `mitigation.closed_port_limit_pps` (chain `closed`).
    LimitClosedPorts(u8),
    /// Answer SYNs to this TCP port with the SYN proxy (SYN cookies before the stack).
    #[serde(rename = "synproxy")]
    SynProxy(u16),
}

impl Measure {
    pub(crate) const REFLECTOR_SET: &'static str = "amp_block";
    pub(crate) const CLOSED_SET: &'static str = "limit_closed";
    pub(crate) const SYNPROXY_SET: &'static str = "syn_proxy";
    /// The measure sets: name, key type, size.
    pub(crate) const SETS: [(&'static str, KeyType, u32); 11] = [
        ("amp_block", KeyType::InetService, 1024),
        ("limit_udp", KeyType::InetService, 1024),
        ("limit_tcp", KeyType::InetService, 1024),
        ("limit_proto", KeyType::InetProto, 256),
        ("limit_frag", KeyType::NfProto, 16),
        ("meter_new", KeyType::InetService, 1024),
        ("limit_conns", KeyType::InetService, 1024),
        ("block_synack", KeyType::NfProto, 16),
        ("block_flags", KeyType::NfProto, 16),
        (Measure::CLOSED_SET, KeyType::InetProto, 16),
        (Measure::SYNPROXY_SET, KeyType::InetService, 1024),
    ];

    pub(crate) fn set(self) -> &'static str {
        match self {
            Measure::BlockReflector(_) => Measure::REFLECTOR_SET,
            Measure::LimitUdpPort(_) => "limit_udp",
            Measure::LimitTcpPort(_) => "limit_tcp",
            Measure::LimitProto(_) => "limit_proto",
            Measure::LimitFragments(_) => "limit_frag",
            Measure::MeterNewConnections(_) => "meter_new",
            Measure::LimitConnections(_) => "limit_conns",
            Measure::BlockSynAcks(_) => "block_synack",
            Measure::BlockOddFlags(_) => "block_flags",
            Measure::LimitClosedPorts(_) => Measure::CLOSED_SET,
            Measure::SynProxy(_) => Measure::SYNPROXY_SET,
        }
    }

    pub(crate) fn key(self) -> Key {
        match self {
            Measure::BlockReflector(p)
            | Measure::LimitUdpPort(p)
            | Measure::LimitTcpPort(p)
            | Measure::MeterNewConnections(p)
            | Measure::LimitConnections(p)
            | Measure::SynProxy(p) => Key::Ports(p, p),
            Measure::LimitProto(b)
            | Measure::LimitFragments(b)
            | Measure::BlockSynAcks(b)
            | Measure::BlockOddFlags(b)
            | Measure::LimitClosedPorts(b) => Key::Byte(b),
        }
    }
}

/// `meta nfproto X ip saddr @set ip saddr != @allow4 counter name "drop_<set>" drop` for a
/// ban set: the safelist wins over any ban (one the safelist grew to cover since), and is
/// looked up only for banned packets.
fn ban_rule(role: SetRole) -> Vec<Expr> {
    let family = role.family();
    let (nfproto, field) = family_source(family);
    let mut rule = Expr::meta_is(MetaKey::NfProto, nfproto).to_vec();
    rule.push(Expr::Payload(field));
    rule.push(Expr::Lookup {
        set: role.name().to_string(),
        invert: false,
    });
    rule.extend(not_safelisted(family));
    rule.extend([
        Expr::NamedCounter(drop_counter(role.name())),
        Expr::Verdict(Verdict::Drop),
    ]);
    rule
}

/// A family's nfproto and source address field.
fn family_source(family: Family) -> (u8, Field) {
    match family {
        Family::V4 => (NFPROTO_IPV4, Field::Ip4Saddr),
        Family::V6 => (NFPROTO_IPV6, Field::Ip6Saddr),
    }
}

/// `ip saddr != @allow4` (`ip6 saddr != @allow6`): the source is not safelisted.
fn not_safelisted(family: Family) -> [Expr; 2] {
    let (_, field) = family_source(family);
    [
        Expr::Payload(field),
        Expr::Lookup {
            set: SetRole::Allow(family).name().to_string(),
            invert: true,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// rules/ftagent.nft is this rendering; `FTAGENT_BLESS=1 cargo test` rewrites it.
    #[test]
    fn the_fixed_counters_are_listed_in_index_order_with_distinct_names() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
        }
        let names: HashSet<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Counter::ALL.len());
        assert_eq!(
            desired(&Config::default()).counters[..15],
            Counter::ALL.map(|c| c.name())
        );
    }

    #[test]
    fn default_table_renders_as_rules_file() {
        let text = desired(&Config::default()).as_fresh_state().render();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/ftagent.nft");
        if std::env::var_os("FTAGENT_BLESS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        assert_eq!(text, std::fs::read_to_string(path).unwrap());
    }

    #[test]
    fn fresh_state_matches_its_spec() {
        let spec = desired(&Config::default());
        assert!(spec.as_fresh_state().differences(&spec).is_empty());
    }

    #[test]
    fn differences_name_what_is_wrong() {
        let spec = desired(&Config::default());
        let mut state = spec.as_fresh_state();
        state.sets.retain(|s| s.name != "ban6");
        state
            .chains
            .iter_mut()
            .find(|c| c.name == CHAIN)
            .unwrap()
            .rules
            .push(RuleState::Unknown("meta mark".into()));
        state.counters.pop();
        let diffs = state.differences(&spec);
        assert_eq!(
            diffs,
            vec![
                "the named counters differ",
                "set ban6 is missing",
                "chain prerouting has other rules"
            ]
        );
    }

    #[test]
    fn every_rule_of_the_spec_renders() {
        for chain in desired(&Config::default()).chains {
            for rule in chain.rules {
                assert!(expr::render_rule(&rule).is_some(), "{rule:?}");
            }
        }
    }

    /// Issue 15: the closed-port limit sits on the input hook (what is forwarded or
    /// DNATed to a container never reaches it), spares connections, services and any port with
    /// a socket, and takes every source (no safelist); rate 0 drops.
    #[test]
    fn issue15_closed_port_chain() {
        let rendered = |config: &Config| -> Vec<String> {
            let spec = desired(config);
            let chain = spec.chains.iter().find(|c| c.name == CLOSED_CHAIN).unwrap();
            assert_eq!(
                (chain.hook, chain.priority),
                (ChainHook::Input, CLOSED_PRIORITY)
            );
            chain
                .rules
                .iter()
                .map(|r| expr::render_rule(r).unwrap())
                .collect()
        };
        let mut config = Config::default();
        assert_eq!(
            rendered(&config),
            [
                "meta l4proto != @limit_closed return",
                "ct state established,related return",
                "meta l4proto tcp tcp dport @svc_tcp return",
                "meta l4proto udp udp dport @svc_udp return",
                "socket transparent <= 1 return",
                "meta l4proto tcp limit rate over 100/second burst 10 packets \
                 counter name \"drop_limit_closed\" drop",
                "meta l4proto udp limit rate over 100/second burst 10 packets \
                 counter name \"drop_limit_closed\" drop",
            ]
        );
        config.mitigation.closed_port_limit_pps = 0;
        assert_eq!(
            rendered(&config)[5],
            "meta l4proto tcp counter name \"drop_limit_closed\" drop"
        );
        let spec = desired(&config);
        let mut state = spec.as_fresh_state();
        let closed = state.chains.iter_mut().find(|c| c.name == CLOSED_CHAIN);
        closed.unwrap().hook.as_mut().unwrap().hook = "prerouting".into();
        assert_eq!(
            state.differences(&spec),
            ["chain closed has another hook, type, priority or policy"]
        );
    }

    /// The sets a rule looks up (plain or inverted) or adds to.
    fn sets_of(rule: &[Expr]) -> Vec<(&str, bool)> {
        rule.iter()
            .filter_map(|e| match e {
                Expr::Lookup { set, invert } => Some((set.as_str(), *invert)),
                Expr::Dynset { set, .. } | Expr::SetAdd(set) => Some((set.as_str(), false)),
                _ => None,
            })
            .collect()
    }

    /// Issue 15, item 4: the safelist is no blanket `return`: a safelisted source is skipped
    /// by every ban and per-source meter rule (of its own family), and by nothing else.
    #[test]
    fn issue15_safelisted_sources_skip_bans_and_meters_only() {
        let spec = desired(&Config::default());
        let per_source = [
            "ban4", "ban6", "bannet4", "bannet6", "meter4", "meter6", "newconn4", "newconn6",
            "conns4", "conns6",
        ];
        let mut skipping = 0;
        for chain in &spec.chains {
            for rule in &chain.rules {
                let sets = sets_of(rule);
                assert!(
                    !(rule.contains(&Expr::Verdict(Verdict::Return))
                        && sets.iter().any(|(s, _)| s.starts_with("allow"))),
                    "{}: {rule:?}",
                    chain.name
                );
                let allow = sets
                    .iter()
                    .find(|(s, _)| s.starts_with("allow"))
                    .map(|(s, invert)| (*s, *invert));
                let keyed = sets
                    .iter()
                    .find(|(s, _)| per_source.contains(s))
                    .map(|(s, _)| *s);
                match (keyed, allow) {
                    (Some(set), Some((allow, true))) => {
                        let family = if set.ends_with('4') {
                            "allow4"
                        } else {
                            "allow6"
                        };
                        assert_eq!(allow, family, "{rule:?}");
                        skipping += 1;
                    }
                    (None, None) => {}
                    _ => panic!("{}: {rule:?}", chain.name),
                }
            }
        }
        // 4 bans in the early chain and 4 in prerouting; the meters of limit_udp, limit_tcp,
        // meter_new and limit_conns, both families.
        assert_eq!(skipping, 16);
    }

    /// Issue 15, item 7: the TCP port limit runs after conntrack, only on segments outside
    /// any connection that are not plain SYNs; nothing in the chain before conntrack names it.
    #[test]
    fn issue15_the_tcp_port_limit_spares_established_connections() {
        let spec = desired(&Config::default());
        let limit_tcp = |rule: &Vec<Expr>| sets_of(rule).contains(&("limit_tcp", false));
        for chain in &spec.chains {
            let rules: Vec<&Vec<Expr>> = chain.rules.iter().filter(|r| limit_tcp(r)).collect();
            if chain.name != CT_CHAIN {
                assert!(rules.is_empty(), "{}: {rules:?}", chain.name);
                continue;
            }
            assert_eq!(rules.len(), 3, "two meters and the port: {rules:?}");
            let unsolicited = ct_state(CT_STATE_UNSOLICITED);
            let not_syn = [
                Expr::Payload(Field::TcpFlags),
                Expr::Bitwise(vec![FIN | SYN | RST | ACK]),
                Expr::Cmp(CmpOp::Neq, vec![SYN]),
            ];
            for rule in rules {
                assert_eq!(rule[..3], unsolicited[..], "{rule:?}");
                assert!(rule.windows(3).any(|w| w == not_syn), "{rule:?}");
                assert_eq!(rule.last(), Some(&Expr::Verdict(Verdict::Drop)));
            }
        }
        assert_eq!(
            CT_STATE_UNSOLICITED & (CT_STATE_ESTABLISHED | expr::CT_STATE_RELATED),
            0
        );
    }

    #[test]
    fn bans_go_to_the_set_of_their_shape() {
        let host: Cidr = "10.250.0.1".parse().unwrap();
        let net: Cidr = "10.250.1.0/24".parse().unwrap();
        let host6: Cidr = "fd00:250::1".parse().unwrap();
        assert_eq!(SetRole::for_ban(&host).name(), "ban4");
        assert_eq!(SetRole::for_ban(&net).name(), "bannet4");
        assert_eq!(SetRole::for_ban(&host6).name(), "ban6");
    }

    #[test]
    fn service_ranges_get_their_own_counters() {
        assert_eq!(service_counter(Proto::Tcp, 80, 80, false), "tcp_80");
        assert_eq!(
            service_counter(Proto::Udp, 8000, 8100, true),
            "new_udp_8000-8100"
        );
    }
}
