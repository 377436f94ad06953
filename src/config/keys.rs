//! Every configuration key, defined once: its name, default, type and rule, doc line and
//! reload class. Parsing, range checks, "did you mean", the default file
//! (`super::default_file`), `Config::default()` and the key tables of docs/configuration.md are
//! all drawn from these descriptors. A new key is one entry here, plus its field and its use.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::check::{Checker, FloatRule};
use super::descriptor::Initial::{Required, Toml, Unset};
use super::descriptor::Reload::{Live, Restart, RestartSection};
use super::descriptor::{
    at, boolean, cidrs, custom, duration, integer, integer_or_auto, number, path, ports, Key, Typed,
};
use super::{
    Agent, Bgp, Compat, Config, Detection, FlowAction, IptablesShim, Metrics, Mitigation, Mode,
    Nft, OnStop, Pcap, PortRange, Proto, Sense, Service, Webhook, WebhookFormat,
};

/// The top-level tables, in the order of the default file and the docs.
pub(crate) const SECTIONS: &[&str] = &[
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

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const HOURS_24: Duration = secs(24 * 3600);
const SET_SIZE: (i128, i128) = (1, 16_777_216);

/// The keys of the tables (every section but `[[service]]` and `[[webhook]]`).
pub(crate) static KEYS: &[Key<Config>] = &[
    Key {
        name: "agent.tick",
        default: Toml("\"100ms\""),
        reload: Restart,
        value: &duration("the tick", (ms(10), secs(10)), "between 10ms and 10s", at!(agent.tick)),
        doc: "How often ftagent samples the traffic counters and runs detection.",
    },
    Key {
        name: "agent.warmup",
        default: Toml("\"60s\""),
        reload: Restart,
        value: &duration(
            "the warmup",
            (Duration::ZERO, HOURS_24),
            "between 0s and 24h",
            at!(agent.warmup),
        ),
        doc: "How long ftagent learns normal traffic after it starts before its baselines judge. \
             Until then only floods over `detection.ceiling_pps` open incidents (and are \
             mitigated). Saved state that has learned this long carries over a restart.",
    },
    Key {
        name: "agent.state_dir",
        default: Toml("\"/var/lib/ftagent\""),
        reload: Restart,
        value: &path(at!(agent.state_dir)),
        doc: "Directory for state that must survive a restart: `detector.json` (baselines, open \
             incidents) and `mitigation.json` (the incidents being mitigated with every measure, \
             every prefix ban and the 1,024 host bans of each that run out last, each with when \
             it runs out; the operators' bans, whole; the SYN-cookie setting to put back). \
             Written atomically when an incident opens or ends, when what is in force changes — \
             a ban or measure added, lifted or run out, not a refresh — at most once a second, \
             every minute and at stop; files older than a day are not loaded. After a restart, \
             an incident's bans beyond those 1,024 stay in the kernel and run out by themselves.",
    },
    Key {
        name: "agent.control_socket",
        default: Toml("\"/run/ftagent/ftagent.sock\""),
        reload: Restart,
        value: &path(at!(agent.control_socket)),
        doc: "Unix socket used by `ftagent` subcommands to talk to the running daemon.",
    },
    Key {
        name: "safelist.cidrs",
        default: Toml("[]"),
        reload: Live,
        value: &cidrs(at!(safelist)),
        doc: "Sources that are never banned nor metered per source (a ban that covers one drops \
             nothing of it). An incident's port-wide measures — a port limit, a reflector block, \
             the ICMP, protocol and fragment limits — still apply to them, so a flood spoofing a \
             safelisted address is held back with the rest of its traffic. Overlapping and \
             adjacent entries are merged.",
    },
    Key {
        name: "detection.floor_pps",
        default: Toml("5000"),
        reload: Live,
        value: &integer("floor_pps", (1, u64::MAX as i128), "at least 1", at!(detection.floor_pps)),
        doc: "Packets per second below which traffic is never treated as an attack, however \
             unusual it looks. Applies to every packet counter; a `[[service]]` may set its own.",
    },
    Key {
        name: "detection.k",
        default: Toml("6.0"),
        reload: Live,
        value: &number("k", (0.0, 1000.0), "between 0 and 1000", at!(detection.k)),
        doc: "A counter is over its threshold above `mean + k × deviation` of its baseline (if \
             that is above the floor). Integers such as `6` are accepted.",
    },
    Key {
        name: "detection.m",
        default: Toml("3.0"),
        reload: Live,
        value: &number("m", (1.0, 1000.0), "between 1 and 1000", at!(detection.m)),
        doc: "…and above `m × mean`. The threshold is the largest of the floor, `mean + k × \
             deviation` and `m × mean`.",
    },
    Key {
        name: "detection.half_life",
        default: Toml("\"10m\""),
        reload: Live,
        value: &duration(
            "the half-life",
            (secs(10), secs(7 * 24 * 3600)),
            "between 10s and 7 days",
            at!(detection.half_life),
        ),
        doc: "Half-life of the baselines' averages (the mean and the mean absolute deviation of \
             each counter's rate): after this long, older traffic weighs half as much. A faster \
             average with a twentieth of it lets a slow legitimate ramp lift a threshold up to \
             twice.",
    },
    Key {
        name: "detection.consecutive_ticks",
        default: Toml("3"),
        reload: Live,
        value: &integer(
            "consecutive_ticks",
            (1, 100),
            "between 1 and 100",
            at!(detection.consecutive_ticks),
        ),
        doc: "Ticks a counter must be over its threshold, among its last max(20, 2 × this) ticks, \
             before an incident opens: at the default 100ms tick a steady attack is announced \
             within about 0.3 s, and one that comes and goes (pulses, short bursts) in about a \
             second. A packet counter whose excess over its threshold in the last second is what \
             this many ticks at twice the threshold carry opens the incident at once, so a flood \
             sent as one short burst a second cannot dodge confirmation; and so does one 1.8 \
             times over its threshold for 120 ms — as soon as a packet counter goes over, the \
             agent runs up to six ticks of a fifth of `agent.tick` (5–25 ms; at most twice a \
             second) that time the run from its first packet, so a flood at 2–10 times its \
             threshold opens in about 150 ms while a legitimate spike of 100 ms at three times \
             its threshold does not (new and held connections confirm by their count of ticks \
             only).",
    },
    Key {
        name: "detection.hold",
        default: Toml("\"10s\""),
        reload: Live,
        value: &duration(
            "the hold time",
            (Duration::ZERO, secs(3600)),
            "between 0s and 1h",
            at!(detection.hold),
        ),
        doc: "How long an incident's traffic must stay under 80 % of its threshold before the \
             incident ends. The lower exit threshold and the hold keep a flood that hovers \
             around its threshold one incident.",
    },
    Key {
        name: "detection.floor_new_per_second",
        default: Toml("200"),
        reload: Live,
        value: &integer(
            "floor_new_per_second",
            (1, u64::MAX as i128),
            "at least 1",
            at!(detection.floor_new_per_second),
        ),
        doc: "The same for the new-connection counters, in new connections per second. Low-rate \
             login attacks (20 SSH connections per second) stay below it whatever the baseline.",
    },
    Key {
        name: "detection.max_connections_per_source",
        default: Toml("100"),
        reload: Live,
        value: &integer(
            "max_connections_per_source",
            (1, 10_000_000),
            "between 1 and 10000000",
            at!(detection.max_connections_per_source),
        ),
        doc: "Concurrent connections one source may hold to the service ports (read from \
             conntrack every `sense.conntrack_interval`). More is `slowloris` on a web service, \
             `tcp_connection_flood` on another. This is an absolute limit, not a rate.",
    },
    Key {
        name: "detection.instant_factor",
        default: Toml("10.0"),
        reload: Restart,
        value: &Typed {
            field: at!(detection.instant_factor),
            rule: FloatRule {
                name: "instant_factor",
                min: 0.0,
                max: 1000.0,
                range: "0 (off) or between 2 and 1000",
            },
            check: Checker::instant_factor,
        },
        doc: "The kernel's tripwire: a rule in our table wakes the agent through its own NFLOG \
             group (`sense.tripwire_group`, sent at once, at most once a second per IP protocol) \
             the moment one IP protocol's traffic that no ban or limit has dropped runs at \
             `instant_factor × floor_pps`. The agent then cuts its tick short and measures a 10 \
             ms one: a packet counter at `instant_factor` times its threshold or more opens its \
             incident there, and is mitigated in the same step — within a few tens of \
             milliseconds of the flood's first packet instead of a few ticks. A trip the \
             counters do not bear out (a protocol that is simply busy above the floor) opens \
             nothing and costs one extra counter read.",
    },
    Key {
        name: "detection.ceiling_pps",
        default: Toml("\"auto\""),
        reload: Live,
        value: &integer_or_auto(
            "ceiling_pps",
            (1, 1_000_000_000),
            "\"auto\" or between 1 and 1000000000",
            at!(detection.ceiling_pps),
        ),
        doc: "The absolute ceiling, in packets per second, of the totals, each service's packets, \
             ACKs, `other` and new UDP flows; a tenth of it for SYNs, RSTs, ICMP, ICMPv6, \
             fragments, reflector ports and new TCP connections; never below the counter's \
             floor. During `agent.warmup` (with no usable saved state) a counter's threshold is \
             its ceiling, so an agent started under attack still opens incidents, reported with \
             `\"warmed_up\": false`. No baseline ever learns a tick over its ceiling. `\"auto\"`: \
             twice the rate at which the link carries full-size frames (1,538 bytes on the \
             wire), which no legitimate mix reaches unless most packets are small — 162,549 pps \
             at 1 Gbit/s, 1,625,488 at 10 Gbit/s.",
    },
    Key {
        name: "detection.link_mbps",
        default: Toml("\"auto\""),
        reload: Live,
        value: &integer_or_auto(
            "link_mbps",
            (1, 10_000_000),
            "\"auto\" or between 1 and 10000000",
            at!(detection.link_mbps),
        ),
        doc: "The link speed, in Mbit/s, an `\"auto\"` ceiling is drawn from. `\"auto\"`: the fastest \
             interface that is up and reports its speed (`/sys/class/net/*/speed`), else 1000 \
             (virtio and most virtual interfaces report none). The log says at start which \
             ceiling was drawn from what.",
    },
    Key {
        name: "sense.nflog_group",
        default: Toml("7047"),
        reload: Restart,
        value: &integer(
            "the NFLOG group",
            (1, 65535),
            "between 1 and 65535",
            at!(sense.nflog_group),
        ),
        doc: "The NFLOG group that sampled packets are sent to. Groups are per network namespace, \
             so pick one no other program in the namespace uses.",
    },
    Key {
        name: "sense.tripwire_group",
        default: Toml("7048"),
        reload: Restart,
        value: &integer(
            "the NFLOG group",
            (1, 65535),
            "between 1 and 65535",
            at!(sense.tripwire_group),
        ),
        doc: "The NFLOG group of the tripwire (`detection.instant_factor`), bound by the agent \
             with a queue threshold of 1 so that its one message is never held back for \
             batching. It must differ from `nflog_group`.",
    },
    Key {
        name: "sense.sample_rate",
        default: Toml("2000"),
        reload: Live,
        value: &integer(
            "the sample rate",
            (10, 100_000),
            "between 10 and 100000",
            at!(sense.sample_rate),
        ),
        doc: "The most packets per second copied to ftagent. The kernel enforces this limit, so a \
             flood cannot swamp the agent.",
    },
    Key {
        name: "sense.snaplen",
        default: Toml("128"),
        reload: Restart,
        value: &integer("snaplen", (40, 1500), "between 40 and 1500", at!(sense.snaplen)),
        doc: "How many bytes of each sampled packet are copied. Only the headers are needed.",
    },
    Key {
        name: "sense.amplification_ports",
        default: Toml("[17, 19, 53, 111, 123, 137, 161, 389, 1900, 3283, 3702, 5353, 11211]"),
        reload: Live,
        value: &ports(64, at!(sense.amplification_ports)),
        doc: "UDP source ports of well-known reflectors (chargen, DNS, NTP, SNMP, SSDP, \
             memcached, …). Traffic from these ports is counted separately. `[]` counts none \
             separately.",
    },
    Key {
        name: "sense.conntrack_interval",
        default: Toml("\"5s\""),
        reload: Live,
        value: &duration(
            "the conntrack interval",
            (secs(1), secs(3600)),
            "between 1s and 1h",
            at!(sense.conntrack_interval),
        ),
        doc: "How often ftagent reads the connection table for per-source counts.",
    },
    Key {
        name: "mitigation.ban_duration",
        default: Toml("\"10m\""),
        reload: Live,
        value: &duration(
            "the ban duration",
            (secs(1), secs(30 * 24 * 3600)),
            "between 1s and 30 days",
            at!(mitigation.ban_duration),
        ),
        doc: "How long a ban lasts. A source that keeps attacking has its ban refreshed.",
    },
    Key {
        name: "mitigation.mode",
        default: Toml("\"mitigate\""),
        reload: Live,
        value: &custom(
            "string",
            "`\"mitigate\"`, `\"monitor\"`",
            at!(mitigation.mode),
            Checker::mode,
        ),
        doc: "`\"mitigate\"` acts on incidents. `\"monitor\"` detects and reports what would be done, \
             and touches nothing.",
    },
    Key {
        name: "mitigation.max_bans_per_second",
        default: Toml("50"),
        reload: Live,
        value: &integer(
            "max_bans_per_second",
            (1, 10_000),
            "between 1 and 10000",
            at!(mitigation.max_bans_per_second),
        ),
        doc: "The most new bans per second, hosts and prefixes alike (refreshes are free).",
    },
    Key {
        name: "mitigation.min_source_share",
        default: Toml("0.05"),
        reload: Live,
        value: &number(
            "min_source_share",
            (0.001, 1.0),
            "between 0.001 and 1",
            at!(mitigation.min_source_share),
        ),
        doc: "In a concentrated flood, a source is banned when it carries at least this share of \
             the sampled packets. `0.05` is 5 %. Integers such as `1` are accepted.",
    },
    Key {
        name: "mitigation.prefix_after",
        default: Toml("4"),
        reload: Live,
        value: &integer(
            "prefix_after",
            (2, 256),
            "between 2 and 256",
            at!(mitigation.prefix_after),
        ),
        doc: "When this many banned sources share a /24 (IPv6: /64) and the prefix keeps sending \
             for more than 1.5 s (one tick of spoofed sources is not enough), the whole prefix \
             is banned too, for as long as the incident lasts. Never a prefix holding a \
             safelisted address, one of the host's or a reserved range.",
    },
    Key {
        name: "mitigation.auto_safelist",
        default: Toml("true"),
        reload: Live,
        value: &boolean(at!(mitigation.auto_safelist)),
        doc: "Add the host's own addresses, its default gateways, its DNS resolvers and the peers \
             of established SSH sessions to the safelist: read at start and reload, and again \
             every 2 s (gateways and resolvers every minute), the allow sets changed by the \
             difference. The host's own addresses are never banned either way.",
    },
    Key {
        name: "mitigation.ssh_port",
        default: Toml("22"),
        reload: Live,
        value: &integer(
            "the SSH port",
            (1, 65535),
            "between 1 and 65535",
            at!(mitigation.ssh_port),
        ),
        doc: "The port of the SSH sessions whose established peers `auto_safelist` keeps.",
    },
    Key {
        name: "mitigation.port_limit_pps",
        default: Toml("10000"),
        reload: Live,
        value: &integer(
            "port_limit_pps",
            (1, 10_000_000),
            "between 1 and 10000000",
            at!(mitigation.port_limit_pps),
        ),
        doc: "During a distributed flood, the packets per second the attacked port is held to, \
             all sources together (safelisted ones too). On a TCP port (ACK and RST floods) only \
             the segments outside any connection count: the port's established connections pass \
             untouched.",
    },
    Key {
        name: "mitigation.source_limit_pps",
        default: Toml("200"),
        reload: Live,
        value: &integer(
            "source_limit_pps",
            (1, 10_000_000),
            "between 1 and 10000000",
            at!(mitigation.source_limit_pps),
        ),
        doc: "During a distributed flood on a port, each source (safelisted ones excepted) is \
             metered: its packets per second to that port past this rate are dropped first, \
             before the port limit.",
    },
    Key {
        name: "mitigation.new_connections_per_source",
        default: Toml("20"),
        reload: Live,
        value: &integer(
            "new_connections_per_source",
            (1, 100_000),
            "between 1 and 100000",
            at!(mitigation.new_connections_per_source),
        ),
        doc: "During an HTTP flood on a web port, the new connections per second one source may \
             open to it.",
    },
    Key {
        name: "mitigation.icmp_limit_pps",
        default: Toml("500"),
        reload: Live,
        value: &integer(
            "icmp_limit_pps",
            (1, 1_000_000),
            "between 1 and 1000000",
            at!(mitigation.icmp_limit_pps),
        ),
        doc: "During an ICMP flood, the packets per second ICMP (or ICMPv6) is held to.",
    },
    Key {
        name: "mitigation.fragment_limit_pps",
        default: Toml("500"),
        reload: Live,
        value: &integer(
            "fragment_limit_pps",
            (1, 1_000_000),
            "between 1 and 1000000",
            at!(mitigation.fragment_limit_pps),
        ),
        doc: "During a fragment flood, the packets per second IP fragments are held to.",
    },
    Key {
        name: "mitigation.closed_port_limit_pps",
        default: Toml("100"),
        reload: Live,
        value: &integer(
            "closed_port_limit_pps",
            (0, 1_000_000),
            "between 0 (drop) and 1000000",
            at!(mitigation.closed_port_limit_pps),
        ),
        doc: "During a distributed flood aimed at no single port (random destination ports), the \
             packets per second that TCP (or UDP) to closed ports is held to, all sources \
             together; `0` drops it. A closed port is one that is no configured `[[service]]` \
             and has no socket of the host (the kernel's own lookup, so a service started during \
             the attack is open at once); packets of a connection (`ct state \
             established,related`: replies to the host's own lookups and updates) never count, \
             nor does anything forwarded (DNAT, Docker's published ports).",
    },
    Key {
        name: "mitigation.aggregate_duration",
        default: Toml("\"2m\""),
        reload: Live,
        value: &duration(
            "the aggregate duration",
            (secs(10), secs(3600)),
            "between 10s and 1h",
            at!(mitigation.aggregate_duration),
        ),
        doc: "How long an aggregate measure (a port, ICMP or fragment limit, or a reflector-port \
             block) stays in the kernel unless refreshed. It is refreshed while its incident \
             lasts and removed when the incident ends.",
    },
    Key {
        name: "mitigation.on_stop",
        default: Toml("\"keep\""),
        reload: Live,
        value: &custom(
            "string",
            "`\"keep\"`, `\"remove\"`",
            at!(mitigation.on_stop),
            Checker::on_stop,
        ),
        doc: "What a stop (SIGTERM, SIGINT, `systemctl stop`) does with the table. `\"keep\"` \
             leaves it with its bans and measures, which run out their timeouts by themselves, \
             and a restart takes them over. `\"remove\"` deletes the whole table — bans, measures, \
             the accounting — in one transaction, so nothing of ftagent stays in the kernel; the \
             incidents still open are resumed at the next start without their bans, which the \
             next update of an ongoing attack puts back. SYN cookies are put back to what they \
             were either way.",
    },
    Key {
        name: "mitigation.synproxy",
        default: Toml("true"),
        reload: Live,
        value: &boolean(at!(mitigation.synproxy)),
        doc: "A SYN flood on a TCP service port is answered by the kernel's SYN proxy on that \
             port (nft `synproxy`: SYN cookies before conntrack and the TCP stack, the port's \
             SYNs kept out of conntrack). Used where the kernel has it (probed at start; else, \
             or with `false`, SYN cookies in the stack).",
    },
    Key {
        name: "mitigation.synproxy_mss",
        default: Toml("1460"),
        reload: Live,
        value: &integer(
            "synproxy_mss",
            (536, 9000),
            "between 536 and 9000",
            at!(mitigation.synproxy_mss),
        ),
        doc: "The MSS the SYN proxy announces to IPv4 clients for the server behind it: the \
             interface MTU less 40. IPv6 clients get 20 less.",
    },
    Key {
        name: "mitigation.synproxy_wscale",
        default: Toml("7"),
        reload: Live,
        value: &integer(
            "synproxy_wscale",
            (0, 14),
            "between 0 and 14",
            at!(mitigation.synproxy_wscale),
        ),
        doc: "The window scale the SYN proxy announces: the server's (Linux: 7 with the default \
             buffers).",
    },
    Key {
        name: "mitigation.never_limit_ports",
        default: Toml("[]"),
        reload: Live,
        value: &ports(64, at!(mitigation.never_limit_ports)),
        doc: "Ports no incident ever puts a measure on: no port limit, new-connection meter, \
             connection limit or SYN proxy (each skipped one is reported once per incident as \
             `mitigation_skipped`; a SYN flood there gets SYN cookies). Bans of a concentrated \
             flood's sources still apply.",
    },
    Key {
        name: "nft.compat",
        default: Toml("\"auto\""),
        reload: Restart,
        value: &custom("string", "`\"auto\"`, `\"legacy\"`", at!(nft.compat), Checker::compat),
        doc: "`\"auto\"` detects what the kernel supports. `\"legacy\"` forces the mode for older \
             kernels: the table gets no `owner`/`persist` flags, and ban timeouts are refreshed \
             by deleting and re-adding the element.",
    },
    Key {
        name: "nft.iptables_shim",
        default: Toml("\"auto\""),
        reload: Live,
        value: &custom(
            "string",
            "`\"auto\"`, `\"legacy\"`, `\"nft\"`, `\"off\"`",
            at!(nft.iptables_shim),
            Checker::iptables_shim,
        ),
        doc: "The iptables compatibility chain `FTAGENT` (jumped to from `INPUT`, one set-match \
             rule per family over the ipsets `ftagent-ban4`/`ftagent-ban6`, which mirror every \
             ban with its timeout). `\"auto\"`: in iptables-legacy when the legacy tables hold \
             rules or chains (Fail2Ban's `f2b-*` among them), else in the nft-backed iptables; a \
             host without iptables gets none, with a warning. `\"legacy\"`/`\"nft\"` force a backend \
             and make a failure to install it fatal at start. `\"off\"`: no chain, no ipsets. Our \
             nft table drops first either way (priority −310); the chain is for tools and people \
             that look at iptables.",
    },
    Key {
        name: "nft.ban4_size",
        default: Toml("65536"),
        reload: Live,
        value: &integer("a set size", SET_SIZE, "between 1 and 16777216", at!(nft.ban4_size)),
        doc: "Maximum number of banned IPv4 addresses (kernel set size; also the `maxelem` of \
             ipset `ftagent-ip4`).",
    },
    Key {
        name: "nft.ban6_size",
        default: Toml("65536"),
        reload: Live,
        value: &integer("a set size", SET_SIZE, "between 1 and 16777216", at!(nft.ban6_size)),
        doc: "Maximum number of banned IPv6 addresses.",
    },
    Key {
        name: "nft.bannet4_size",
        default: Toml("16384"),
        reload: Live,
        value: &integer("a set size", SET_SIZE, "between 1 and 16777216", at!(nft.bannet4_size)),
        doc: "Maximum number of banned IPv4 networks.",
    },
    Key {
        name: "nft.bannet6_size",
        default: Toml("16384"),
        reload: Live,
        value: &integer("a set size", SET_SIZE, "between 1 and 16777216", at!(nft.bannet6_size)),
        doc: "Maximum number of banned IPv6 networks.",
    },
    Key {
        name: "bgp.enabled",
        default: Toml("false"),
        reload: RestartSection,
        value: &boolean(at!(bgp.enabled)),
        doc: "Escalate incidents through the BGP daemon. Needs at least one criterion \
             (`escalate_pps`, `escalate_bps`, `escalate_after`) and at least one of `rtbh`, \
             `flowspec`.",
    },
    Key {
        name: "bgp.gobgp",
        default: Toml("\"/usr/bin/gobgp\""),
        reload: RestartSection,
        value: &path(at!(bgp.gobgp)),
        doc: "The `gobgp` command-line client (Debian package `gobgpd`).",
    },
    Key {
        name: "bgp.api",
        default: Toml("\"127.0.0.1:50051\""),
        reload: RestartSection,
        value: &custom(
            "string",
            "`address:port` (IPv6 as `\"[::1]:50051\"`)",
            at!(bgp.api),
            |c,
            v,
            p| c.parsed(v, p, "an address:port"),
        ),
        doc: "gobgpd's gRPC API (`gobgpd --api-hosts`).",
    },
    Key {
        name: "bgp.next_hop4",
        default: Toml("\"192.0.2.1\""),
        reload: RestartSection,
        value: &custom(
            "string",
            "IPv4 address",
            at!(bgp.next_hop4),
            |c,
            v,
            p| c.parsed(v, p, "an IPv4 address"),
        ),
        doc: "Next hop of IPv4 blackhole routes. The upstream usually rewrites it to its discard \
             interface; some want a particular one.",
    },
    Key {
        name: "bgp.next_hop6",
        default: Toml("\"100::1\""),
        reload: RestartSection,
        value: &custom(
            "string",
            "IPv6 address",
            at!(bgp.next_hop6),
            |c,
            v,
            p| c.parsed(v, p, "an IPv6 address"),
        ),
        doc: "Next hop of IPv6 blackhole routes (`100::/64` is the discard-only prefix, RFC \
             6666).",
    },
    Key {
        name: "bgp.communities",
        default: Toml("[\"65535:65281\"]"),
        reload: RestartSection,
        value: &custom(
            "list of strings",
            "`\"ASN:VALUE\"`, each 0 to 65535",
            at!(bgp.communities),
            Checker::communities,
        ),
        doc: "Communities added to blackhole routes besides BLACKHOLE `65535:666` (RFC 7999), \
             which is always there. The default, NO_EXPORT, keeps the blackhole from spreading \
             beyond the upstream, as RFC 7999 asks. Add the upstream's own blackhole community \
             here if it uses one.",
    },
    Key {
        name: "bgp.tag_community",
        default: Toml("\"65534:6660\""),
        reload: RestartSection,
        value: &custom(
            "string",
            "`\"ASN:VALUE\"`, not a well-known one nor one of `communities`",
            at!(bgp.tag_community),
            Checker::community,
        ),
        doc: "Marks ftagent's routes (blackhole and FlowSpec) in the BGP daemon. At start, and \
             every 5 s, ftagent lists the daemon's routes and only ever withdraws locally \
             originated ones carrying this community: routes of other programs or operators are \
             never touched.",
    },
    Key {
        name: "bgp.max_announcements",
        default: Toml("10"),
        reload: RestartSection,
        value: &integer(
            "max_announcements",
            (1, 1000),
            "between 1 and 1000",
            at!(bgp.max_announcements),
        ),
        doc: "The most routes announced at once, blackholes and FlowSpec rules together (found \
             ones included). Past it an escalation is logged and not announced.",
    },
    Key {
        name: "bgp.escalate_pps",
        default: Toml("0"),
        reload: RestartSection,
        value: &integer(
            "a rate",
            (0, u64::MAX as i128),
            "at least 0 (0: not a criterion)",
            at!(bgp.escalate_pps),
        ),
        doc: "Escalate an incident whose rate reaches this many packets per second.",
    },
    Key {
        name: "bgp.escalate_bps",
        default: Toml("0"),
        reload: RestartSection,
        value: &integer(
            "a rate",
            (0, u64::MAX as i128),
            "at least 0 (0: not a criterion)",
            at!(bgp.escalate_bps),
        ),
        doc: "Escalate an incident whose rate reaches this many bits per second.",
    },
    Key {
        name: "bgp.escalate_after",
        default: Toml("\"2m\""),
        reload: RestartSection,
        value: &duration(
            "escalate_after",
            (Duration::ZERO, HOURS_24),
            "between 0s (not a criterion) and 24h",
            at!(bgp.escalate_after),
        ),
        doc: "Escalate an incident still over its threshold this long after it began: local \
             mitigation has not brought the received rate down (the counters count what arrives, \
             before our drops).",
    },
    Key {
        name: "bgp.rtbh",
        default: Toml("true"),
        reload: RestartSection,
        value: &boolean(at!(bgp.rtbh)),
        doc: "Announce the attacked address as a /32 (IPv6: /128) with BLACKHOLE. All its traffic \
             is dropped upstream, the good with the bad: the address goes dark for the rest of \
             the Internet, which is what saves the rest of the uplink.",
    },
    Key {
        name: "bgp.flowspec",
        default: Toml("true"),
        reload: RestartSection,
        value: &boolean(at!(bgp.flowspec)),
        doc: "Announce FlowSpec rules (RFC 8955, IPv6 RFC 8956) matching the attack: destination \
             address, protocol, destination port (or port range; for amplification the \
             reflector's source port), fragments for a fragment flood, and for a concentrated \
             attack one rule per heavy source.",
    },
    Key {
        name: "bgp.action",
        default: Toml("\"discard\""),
        reload: RestartSection,
        value: &custom(
            "string",
            "`\"discard\"`, `\"rate-limit\"`",
            at!(bgp.action),
            Checker::flow_action,
        ),
        doc: "What the FlowSpec rules ask for (traffic-rate 0, or `rate_limit_bps`).",
    },
    Key {
        name: "bgp.rate_limit_bps",
        default: Toml("10000000"),
        reload: RestartSection,
        value: &integer(
            "rate_limit_bps",
            (8, 1_000_000_000_000),
            "between 8 and 1000000000000",
            at!(bgp.rate_limit_bps),
        ),
        doc: "With `action = \"rate-limit\"`, the rate matching traffic is held to, bits per second \
             (announced in bytes per second, FlowSpec's unit).",
    },
    Key {
        name: "bgp.flowspec_sources",
        default: Toml("4"),
        reload: RestartSection,
        value: &integer("flowspec_sources", (0, 16), "between 0 and 16", at!(bgp.flowspec_sources)),
        doc: "In a concentrated attack, FlowSpec rules for up to this many of its heaviest \
             sources (those with at least `mitigation.min_source_share`); 0: one rule by \
             destination only.",
    },
    Key {
        name: "bgp.min_duration",
        default: Toml("\"5m\""),
        reload: RestartSection,
        value: &duration(
            "min_duration",
            (Duration::ZERO, HOURS_24),
            "between 0s and 24h",
            at!(bgp.min_duration),
        ),
        doc: "An announcement stays at least this long, even if its incident ended earlier. \
             Upstream filtering hides the attack from ftagent, so its incident soon ends; this \
             keeps the route from flapping (and from the upstream's route-flap damping).",
    },
    Key {
        name: "bgp.destinations",
        default: Toml("[]"),
        reload: RestartSection,
        value: &cidrs(at!(bgp.destinations)),
        doc: "The addresses routes may be announced for. Empty: this host's own addresses (not \
             loopback or link-local). The attacked address is the sampled destination carrying \
             at least half of the samples.",
    },
    Key {
        name: "bgp.timeout",
        default: Toml("\"5s\""),
        reload: RestartSection,
        value: &duration(
            "the command timeout",
            (ms(100), secs(60)),
            "between 100ms and 60s",
            at!(bgp.timeout),
        ),
        doc: "Longest wait for one `gobgp` command; a daemon that does not answer is retried \
             every 5 s, and never holds up detection.",
    },
    Key {
        name: "pcap.enabled",
        default: Toml("true"),
        reload: RestartSection,
        value: &boolean(at!(pcap.enabled)),
        doc: "Whether captures are written.",
    },
    Key {
        name: "pcap.ring_packets",
        default: Toml("2048"),
        reload: RestartSection,
        value: &integer("ring_packets", (0, 65_536), "between 0 and 65536", at!(pcap.ring_packets)),
        doc: "How many of the most recent samples are kept in memory and written at the head of \
             each capture. Memory: about twice `ring_packets × (snaplen + 16)` bytes plus 1 MiB \
             (the ring and the write buffers). `0`: captures start with the incident.",
    },
    Key {
        name: "pcap.max_packets_per_incident",
        default: Toml("10000"),
        reload: RestartSection,
        value: &integer(
            "max_packets_per_incident",
            (1, 10_000_000),
            "between 1 and 10000000",
            at!(pcap.max_packets_per_incident),
        ),
        doc: "The most packets one capture holds, those from before the incident included. At \
             most `24 + max_packets_per_incident × (16 + snaplen)` bytes.",
    },
    Key {
        name: "pcap.max_disk_mib",
        default: Toml("100"),
        reload: RestartSection,
        value: &integer(
            "max_disk_mib",
            (1, 1_048_576),
            "between 1 and 1048576",
            at!(pcap.max_disk_mib),
        ),
        doc: "The most the capture directory holds, in MiB. Before a write would pass it, the \
             oldest finished captures are removed (those of earlier runs too); when only \
             captures still being written are left, samples are left out of them.",
    },
    Key {
        name: "metrics.enabled",
        default: Toml("true"),
        reload: RestartSection,
        value: &boolean(at!(metrics.enabled)),
        doc: "Serve `/metrics`. On by default because it costs nothing until scraped and, on \
             loopback, shows nothing beyond the host.",
    },
    Key {
        name: "metrics.listen",
        default: Toml("\"127.0.0.1:9947\""),
        reload: RestartSection,
        value: &custom(
            "string",
            "`address:port` (IPv6 as `\"[::1]:9947\"`), port 1 to 65535",
            at!(metrics.listen),
            Checker::listen,
        ),
        doc: "Where to listen. Loopback only by default; to be scraped from another machine give \
             an address of this host (or `\"0.0.0.0:9947\"`/`\"[::]:9947\"`) and restrict who may \
             connect in your firewall: the endpoint has no authentication. 9947 is ours in the \
             range Prometheus exporters use; 9100 is node_exporter's.",
    },
];

/// The keys of each `[[service]]`.
pub(crate) static SERVICE_KEYS: &[Key<Service>] = &[
    Key {
        name: "service.port",
        default: Required,
        reload: Live,
        value: &custom("integer or string", "1 to 65535", at!(Service: ports), Checker::port),
        doc: "One port, written `443` or `\"443\"`, or an inclusive range written `\"8000-8100\"`. In \
             a range, the first port must not be greater than the last.",
    },
    Key {
        name: "service.proto",
        default: Toml("\"tcp\""),
        reload: Live,
        value: &custom("string", "`\"tcp\"`, `\"udp\"`", at!(Service: proto), Checker::proto),
        doc: "The transport protocol.",
    },
    Key {
        name: "service.floor_pps",
        default: Unset("`detection.floor_pps`"),
        reload: Live,
        value: &custom("integer", "1 or more", at!(Service: floor_pps), Checker::service_floor),
        doc: "Packets per second to this service below which its packet counter is never treated \
             as an attack. Set it higher for a service that is busy by nature.",
    },
    Key {
        name: "service.web",
        default: Unset("by port"),
        reload: Live,
        value: &custom(
            "boolean",
            "`true`, `false`",
            at!(Service: web),
            |c,
            v,
            p| c.boolean(v, p).map(Some),
        ),
        doc: "Whether this is a web service: a surge of new connections to it that carry \
             requests, or a flood over its established connections, is an `http_flood` (else a \
             `tcp_connection_flood`); a surge of idle connections, or a source holding too many \
             connections to it, is `slowloris`. Without the key, TCP services on port 80, 443, \
             8080 or 8443 (or a range holding one) are web services. `web = true` is rejected on \
             a UDP service.",
    },
];

/// The keys of each `[[webhook]]`.
pub(crate) static WEBHOOK_KEYS: &[Key<Webhook>] = &[
    Key {
        name: "webhook.url",
        default: Required,
        reload: Live,
        value: &custom(
            "string",
            "`http://` or `https://` with a host",
            at!(Webhook: url),
            Checker::url,
        ),
        doc: "Where the events go. For Slack and Discord, the webhook URL they give you.",
    },
    Key {
        name: "webhook.format",
        default: Toml("\"generic\""),
        reload: Live,
        value: &custom(
            "string",
            "`\"generic\"`, `\"slack\"`, `\"discord\"`",
            at!(Webhook: format),
            Checker::format,
        ),
        doc: "`\"generic\"`: the event's JSON line exactly as `ftagent run` prints it (see the \
             README's \"Events\"). `\"slack\"`: `{\"text\": …, \"blocks\": […]}`, a one-line summary and \
             the details as an mrkdwn section (Mattermost and Rocket.Chat take it too). \
             `\"discord\"`: `{\"content\": …, \"embeds\": […]}`, with mentions disabled.",
    },
    Key {
        name: "webhook.timeout",
        default: Toml("\"5s\""),
        reload: Live,
        value: &duration(
            "the webhook timeout",
            (ms(100), secs(60)),
            "between 100ms and 60s",
            at!(Webhook: timeout),
        ),
        doc: "The longest one attempt may take, connecting and TLS included.",
    },
    Key {
        name: "webhook.retries",
        default: Toml("3"),
        reload: Live,
        value: &integer("retries", (0, 10), "between 0 and 10", at!(Webhook: retries)),
        doc: "Attempts after a failed one: after a timeout, a connection or TLS error, or an HTTP \
             408, 425, 429 or 5xx answer. The waits between attempts double from 1 s (1 s, 2 s, \
             4 s, …) up to 60 s; a longer `Retry-After` in the answer is honoured, up to 60 s. \
             Other answers (3xx, 4xx) are not retried.",
    },
    Key {
        name: "webhook.events",
        default: Toml("[\"attack_start\", \"mitigation_applied\", \"mitigation_removed\", \"attack_end\"]"),
        reload: Live,
        value: &custom(
            "list of strings",
            "`\"attack_start\"`, `\"attack_end\"`, `\"mitigation_applied\"`, `\"mitigation_removed\"`; no duplicates, not empty",
            at!(Webhook: events),
            Checker::event_names,
        ),
        doc: "The events this webhook is sent.",
    },
    Key {
        name: "webhook.ca_file",
        default: Unset("none"),
        reload: Live,
        value: &custom(
            "path",
            "absolute",
            at!(Webhook: ca_file),
            |c,
            v,
            p| c.absolute_path(v, p).map(Some),
        ),
        doc: "A PEM file of the certificate authorities trusted for an `https://` URL, instead of \
             the built-in Mozilla roots. For a private CA, or \
             `\"/etc/ssl/certs/ca-certificates.crt\"` for the system's store. Read at start: a \
             file that cannot be read or holds no certificate stops the start, naming it (on \
             SIGHUP, the running webhooks stay).",
    },
    Key {
        name: "webhook.headers",
        default: Toml("{}"),
        reload: Live,
        value: &custom(
            "table of strings",
            "header names, values without control characters",
            at!(Webhook: headers),
            Checker::headers,
        ),
        doc: "More request headers, for example `headers = { Authorization = \"Bearer …\" }`. \
             `Host`, `Content-Length`, `Transfer-Encoding` and `Connection` are ftagent's own.",
    },
];

/// The services watched when the file names none.
pub(crate) const DEFAULT_SERVICES: &str = "\
[[service]]
port = 22
proto = \"tcp\"

[[service]]
port = 80
proto = \"tcp\"

[[service]]
port = 443
proto = \"tcp\"
";

/// A Config with placeholders, before the descriptors' defaults are read over it (see
/// `super::Config::default`): every value here is replaced.
pub(super) fn blank() -> Config {
    Config {
        agent: Agent {
            tick: Duration::ZERO,
            warmup: Duration::ZERO,
            state_dir: PathBuf::new(),
            control_socket: PathBuf::new(),
        },
        services: Vec::new(),
        safelist: Vec::new(),
        detection: Detection {
            floor_pps: 0,
            k: 0.0,
            m: 0.0,
            half_life: Duration::ZERO,
            consecutive_ticks: 0,
            hold: Duration::ZERO,
            floor_new_per_second: 0,
            max_connections_per_source: 0,
            instant_factor: 0.0,
            ceiling_pps: None,
            link_mbps: None,
        },
        sense: Sense {
            nflog_group: 0,
            tripwire_group: 0,
            sample_rate: 0,
            snaplen: 0,
            amplification_ports: Vec::new(),
            conntrack_interval: Duration::ZERO,
        },
        mitigation: Mitigation {
            ban_duration: Duration::ZERO,
            mode: Mode::Mitigate,
            max_bans_per_second: 0,
            min_source_share: 0.0,
            prefix_after: 0,
            auto_safelist: false,
            ssh_port: 0,
            port_limit_pps: 0,
            source_limit_pps: 0,
            new_connections_per_source: 0,
            icmp_limit_pps: 0,
            fragment_limit_pps: 0,
            closed_port_limit_pps: 0,
            aggregate_duration: Duration::ZERO,
            on_stop: OnStop::Keep,
            synproxy: false,
            synproxy_mss: 0,
            synproxy_wscale: 0,
            never_limit_ports: Vec::new(),
        },
        nft: Nft {
            compat: Compat::Auto,
            iptables_shim: IptablesShim::Auto,
            ban4_size: 0,
            ban6_size: 0,
            bannet4_size: 0,
            bannet6_size: 0,
        },
        bgp: Bgp {
            enabled: false,
            gobgp: PathBuf::new(),
            api: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            next_hop4: Ipv4Addr::UNSPECIFIED,
            next_hop6: Ipv6Addr::UNSPECIFIED,
            communities: Vec::new(),
            tag_community: 0,
            max_announcements: 0,
            escalate_pps: 0,
            escalate_bps: 0,
            escalate_after: Duration::ZERO,
            rtbh: false,
            flowspec: false,
            action: FlowAction::Discard,
            rate_limit_bps: 0,
            flowspec_sources: 0,
            min_duration: Duration::ZERO,
            destinations: Vec::new(),
            timeout: Duration::ZERO,
        },
        webhooks: Vec::new(),
        pcap: Pcap {
            enabled: false,
            ring_packets: 0,
            max_packets_per_incident: 0,
            max_disk_mib: 0,
        },
        metrics: Metrics {
            enabled: false,
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        },
    }
}

/// A `[[service]]` with its keys' defaults, before its own keys are read.
pub(super) fn blank_service() -> Service {
    let blank = Service {
        ports: PortRange { first: 0, last: 0 },
        proto: Proto::Tcp,
        floor_pps: None,
        web: None,
    };
    super::descriptor::with_defaults(blank, SERVICE_KEYS)
}

/// A `[[webhook]]` with its keys' defaults (`url` empty), before its own keys are read.
pub(super) fn blank_webhook() -> Webhook {
    let blank = Webhook {
        url: String::new(),
        format: WebhookFormat::Generic,
        timeout: Duration::ZERO,
        retries: 0,
        events: Vec::new(),
        ca_file: None,
        headers: Vec::new(),
    };
    super::descriptor::with_defaults(blank, WEBHOOK_KEYS)
}
