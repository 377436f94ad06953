//! Tests of the configuration: parsing, defaults, ranges and the file:line messages.

use super::check::parse_port_range;
use super::keys;
use super::*;

const ORIGIN: &str = "/etc/ftagent/ftagent.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new(ORIGIN))
}

/// The error's Display, asserting it is an Invalid error.
fn error(text: &str) -> String {
    match parse(text) {
        Err(error @ ConfigError::Invalid { .. }) => error.to_string(),
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(config) => panic!("expected an error, got {config:?}"),
    }
}

/// Asserts the error names `key` at `line:column` and mentions `words`.
fn assert_error(text: &str, line: usize, column: usize, key: &str, words: &str) {
    let message = error(text);
    let prefix = format!("{ORIGIN}:{line}:{column}: {key}: ");
    assert!(
        message.starts_with(&prefix),
        "{message:?} should start with {prefix:?}"
    );
    assert!(
        message.contains(words),
        "{message:?} should contain {words:?}"
    );
}

fn range(first: u16, last: u16) -> PortRange {
    PortRange { first, last }
}

const FULL_DEFAULT_FILE: &str = r#"
[agent]
tick = "100ms"
warmup = "60s"
state_dir = "/var/lib/ftagent"
control_socket = "/run/ftagent/ftagent.sock"

[[service]]
port = 22
proto = "tcp"

[[service]]
port = 80
proto = "tcp"

[[service]]
port = 443
proto = "tcp"

[safelist]
cidrs = []

[detection]
floor_pps = 5000
k = 6.0
m = 3.0
half_life = "10m"
consecutive_ticks = 3
hold = "10s"
floor_new_per_second = 200
max_connections_per_source = 100
instant_factor = 10.0
ceiling_pps = "auto"
link_mbps = "auto"

[sense]
nflog_group = 7047
tripwire_group = 7048
sample_rate = 2000
snaplen = 128
amplification_ports = [17, 19, 53, 111, 123, 137, 161, 389, 1900, 3283, 3702, 5353, 11211]
conntrack_interval = "5s"

[mitigation]
ban_duration = "10m"
mode = "mitigate"
max_bans_per_second = 50
min_source_share = 0.05
prefix_after = 4
auto_safelist = true
ssh_port = 22
port_limit_pps = 10000
source_limit_pps = 200
new_connections_per_source = 20
icmp_limit_pps = 500
fragment_limit_pps = 500
closed_port_limit_pps = 100
aggregate_duration = "2m"
synproxy = true
synproxy_mss = 1460
synproxy_wscale = 7
never_limit_ports = []

[nft]
compat = "auto"
ban4_size = 65536
ban6_size = 65536
bannet4_size = 16384
bannet6_size = 16384
"#;

#[test]
fn empty_file_gives_defaults() {
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(parse("# nothing\n\n").unwrap(), Config::default());
}

#[test]
fn explicit_defaults_equal_embedded_defaults() {
    assert_eq!(parse(FULL_DEFAULT_FILE).unwrap(), Config::default());
}

#[test]
fn documented_default_file_equals_embedded_defaults() {
    let doc = include_str!("../../docs/configuration.md");
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/configuration.md opens with a ```toml example");
    assert_eq!(parse(example).unwrap(), Config::default());
}

#[test]
fn defaults_are_as_documented() {
    let config = Config::default();
    assert_eq!(config.agent.tick, Duration::from_millis(100));
    assert_eq!(config.agent.warmup, Duration::from_secs(60));
    assert_eq!(config.agent.state_dir, PathBuf::from("/var/lib/ftagent"));
    let ports: Vec<String> = config
        .services
        .iter()
        .map(|s| format!("{}/{}", s.ports, s.proto))
        .collect();
    assert_eq!(ports, ["22/tcp", "80/tcp", "443/tcp"]);
    assert!(config.safelist.is_empty());
    assert_eq!(config.detection.floor_pps, 5000);
    assert_eq!(config.detection.k, 6.0);
    assert_eq!(config.detection.m, 3.0);
    assert_eq!(config.detection.half_life, Duration::from_secs(600));
    assert_eq!(config.detection.consecutive_ticks, 3);
    assert_eq!(config.detection.hold, Duration::from_secs(10));
    assert_eq!(config.detection.floor_new_per_second, 200);
    assert_eq!(config.detection.max_connections_per_source, 100);
    assert!(config.services.iter().all(|s| s.floor_pps.is_none()));
    let web: Vec<bool> = config.services.iter().map(Service::is_web).collect();
    assert_eq!(web, [false, true, true]);
    assert_eq!(config.sense.nflog_group, 7047);
    assert_eq!(config.sense.sample_rate, 2000);
    assert_eq!(config.sense.snaplen, 128);
    assert_eq!(
        config.sense.amplification_ports,
        [17, 19, 53, 111, 123, 137, 161, 389, 1900, 3283, 3702, 5353, 11211]
    );
    assert_eq!(config.sense.conntrack_interval, Duration::from_secs(5));
    assert_eq!(config.mitigation.ban_duration, Duration::from_secs(600));
    assert_eq!(config.mitigation.mode, Mode::Mitigate);
    assert_eq!(config.mitigation.max_bans_per_second, 50);
    assert_eq!(config.mitigation.min_source_share, 0.05);
    assert_eq!(config.mitigation.prefix_after, 4);
    assert!(config.mitigation.auto_safelist);
    assert_eq!(config.mitigation.ssh_port, 22);
    assert_eq!(config.mitigation.port_limit_pps, 10_000);
    assert_eq!(config.mitigation.source_limit_pps, 200);
    assert_eq!(config.mitigation.new_connections_per_source, 20);
    assert_eq!(config.mitigation.icmp_limit_pps, 500);
    assert_eq!(config.mitigation.fragment_limit_pps, 500);
    assert_eq!(config.mitigation.closed_port_limit_pps, 100);
    assert_eq!(
        config.mitigation.aggregate_duration,
        Duration::from_secs(120)
    );
    assert_eq!(config.nft.compat, Compat::Auto);
    assert_eq!(config.nft.bannet6_size, 16384);
}

#[test]
fn parses_every_key() {
    let config = parse(
        r#"
[agent]
tick = "250ms"
warmup = "1h 30m"
state_dir = "/srv/ftagent"
control_socket = "/run/ft.sock"

[[service]]
port = "8000-8100"
proto = "udp"
floor_pps = 20_000

[[service]]
port = "443"

[[service]]
port = 8000
web = true

[[service]]
port = 8443
web = false

[safelist]
cidrs = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]

[detection]
floor_pps = 1
k = 4
m = 2.5
half_life = "1h"
consecutive_ticks = 100
hold = "0s"
floor_new_per_second = 50
max_connections_per_source = 1
instant_factor = 0
ceiling_pps = 1_000_000_000
link_mbps = 1

[sense]
nflog_group = 65535
tripwire_group = 1
sample_rate = 100_000
snaplen = 40
amplification_ports = [
  53,
  0x7b, # NTP
  11211,
]
conntrack_interval = "1h"

[mitigation]
ban_duration = "30days"
mode = "monitor"
max_bans_per_second = 10_000
min_source_share = 1
prefix_after = 256
auto_safelist = false
ssh_port = 2222
port_limit_pps = 10_000_000
source_limit_pps = 10_000_000
new_connections_per_source = 100_000
icmp_limit_pps = 1
fragment_limit_pps = 1_000_000
closed_port_limit_pps = 0
aggregate_duration = "1h"
on_stop = "remove"
synproxy = false
synproxy_mss = 8960
synproxy_wscale = 14
never_limit_ports = [443, 8443]

[nft]
compat = "legacy"
iptables_shim = "off"
ban4_size = 1
ban6_size = 16777216
bannet4_size = 0x10
bannet6_size = 1_000
"#,
    )
    .unwrap();
    assert_eq!(config.agent.tick, Duration::from_millis(250));
    assert_eq!(config.agent.warmup, Duration::from_secs(5400));
    assert_eq!(config.agent.state_dir, PathBuf::from("/srv/ftagent"));
    assert_eq!(config.agent.control_socket, PathBuf::from("/run/ft.sock"));
    assert_eq!(
        config.services,
        vec![
            Service {
                ports: range(8000, 8100),
                proto: Proto::Udp,
                floor_pps: Some(20_000),
                web: None,
            },
            Service {
                ports: range(443, 443),
                proto: Proto::Tcp,
                floor_pps: None,
                web: None,
            },
            Service {
                ports: range(8000, 8000),
                proto: Proto::Tcp,
                floor_pps: None,
                web: Some(true),
            },
            Service {
                ports: range(8443, 8443),
                proto: Proto::Tcp,
                floor_pps: None,
                web: Some(false),
            },
        ]
    );
    let web: Vec<bool> = config.services.iter().map(Service::is_web).collect();
    assert_eq!(web, [false, true, true, false]);
    let safelist: Vec<String> = config.safelist.iter().map(|c| c.to_string()).collect();
    assert_eq!(safelist, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]);
    assert_eq!(
        config.detection,
        Detection {
            floor_pps: 1,
            k: 4.0,
            m: 2.5,
            half_life: Duration::from_secs(3600),
            consecutive_ticks: 100,
            hold: Duration::ZERO,
            floor_new_per_second: 50,
            max_connections_per_source: 1,
            instant_factor: 0.0,
            ceiling_pps: Some(1_000_000_000),
            link_mbps: Some(1),
        }
    );
    assert_eq!(
        config.sense,
        Sense {
            nflog_group: 65535,
            tripwire_group: 1,
            sample_rate: 100_000,
            snaplen: 40,
            amplification_ports: vec![53, 123, 11211],
            conntrack_interval: Duration::from_secs(3600),
        }
    );
    assert_eq!(
        config.mitigation,
        Mitigation {
            ban_duration: Duration::from_secs(30 * 24 * 3600),
            mode: Mode::Monitor,
            max_bans_per_second: 10_000,
            min_source_share: 1.0,
            prefix_after: 256,
            auto_safelist: false,
            ssh_port: 2222,
            port_limit_pps: 10_000_000,
            source_limit_pps: 10_000_000,
            new_connections_per_source: 100_000,
            icmp_limit_pps: 1,
            fragment_limit_pps: 1_000_000,
            closed_port_limit_pps: 0,
            aggregate_duration: Duration::from_secs(3600),
            on_stop: OnStop::Remove,
            synproxy: false,
            synproxy_mss: 8960,
            synproxy_wscale: 14,
            never_limit_ports: vec![443, 8443],
        }
    );
    assert_eq!(
        config.nft,
        Nft {
            compat: Compat::Legacy,
            iptables_shim: IptablesShim::Off,
            ban4_size: 1,
            ban6_size: 16777216,
            bannet4_size: 16,
            bannet6_size: 1000
        }
    );
}

#[test]
fn partial_tables_keep_other_defaults() {
    let config = parse("[agent]\ntick = \"1s\"\n").unwrap();
    assert_eq!(config.agent.tick, Duration::from_secs(1));
    assert_eq!(config.agent.warmup, Config::default().agent.warmup);
    assert_eq!(config.services, Config::default().services);
}

#[test]
fn inline_services_and_dotted_keys_work() {
    let config =
        parse("agent.tick = \"10ms\"\nservice = [{ port = 53, proto = \"udp\" }, { port = 53 }]\n")
            .unwrap();
    assert_eq!(config.agent.tick, Duration::from_millis(10));
    assert_eq!(config.services.len(), 2);
    assert_eq!(config.services[0].proto, Proto::Udp);
}

#[test]
fn unknown_key_at_top_level() {
    assert_error(
        "[agnet]\ntick = \"1s\"\n",
        1,
        2,
        "agnet",
        "unknown key (did you mean \"agent\"?)",
    );
    assert_error(
        "tick = \"1s\"\n",
        1,
        1,
        "tick",
        "the top-level tables are: agent, service",
    );
}

#[test]
fn unknown_key_in_agent() {
    assert_error(
        "[agent]\ntick = \"1s\"\ntik = \"1s\"\n",
        3,
        1,
        "agent.tik",
        "unknown key (did you mean \"tick\"?); the keys of [agent] are: tick, warmup",
    );
}

#[test]
fn unknown_key_in_second_service() {
    assert_error(
        "[[service]]\nport = 22\n\n[[service]]\nport = 80\n  protocol = \"tcp\"\n",
        6,
        3,
        "service[2].protocol",
        "unknown key; the keys of [[service]] are: port, proto",
    );
}

#[test]
fn unknown_key_with_odd_name_is_quoted() {
    assert_error(
        "[nft]\n\"ban 4\" = 1\n",
        2,
        1,
        "nft.\"ban 4\"",
        "unknown key",
    );
}

#[test]
fn bad_duration() {
    assert_error(
        "[agent]\ntick = \"10 parsecs\"\n",
        2,
        8,
        "agent.tick",
        "\"10 parsecs\" is not a duration: unknown time unit \"parsecs\"",
    );
    assert_error(
        "[agent]\nwarmup = \"10\"\n",
        2,
        10,
        "agent.warmup",
        "\"10\" is not a duration",
    );
}

#[test]
fn tick_out_of_range_says_the_range() {
    assert_eq!(
            error("[agent]\n\ntick = \"1ms\"\n"),
            "/etc/ftagent/ftagent.toml:3:8: agent.tick: \"1ms\" is too short: the tick must be between 10ms and 10s"
        );
    assert_error(
        "[agent]\ntick = \"11s\"\n",
        2,
        8,
        "agent.tick",
        "\"11s\" is too long: the tick must be between 10ms and 10s",
    );
}

#[test]
fn other_duration_ranges() {
    assert!(parse("[agent]\nwarmup = \"0s\"\n").is_ok());
    assert!(parse("[agent]\nwarmup = \"24h\"\n").is_ok());
    assert_error(
        "[agent]\nwarmup = \"25h\"\n",
        2,
        10,
        "agent.warmup",
        "between 0s and 24h",
    );
    assert_error(
        "[mitigation]\nban_duration = \"500ms\"\n",
        2,
        16,
        "mitigation.ban_duration",
        "\"500ms\" is too short: the ban duration must be between 1s and 30 days",
    );
    assert_error(
        "[mitigation]\nban_duration = \"31days\"\n",
        2,
        16,
        "mitigation.ban_duration",
        "is too long",
    );
}

#[test]
fn duration_of_wrong_type() {
    assert_error(
        "[agent]\ntick = 100\n",
        2,
        8,
        "agent.tick",
        "expected a duration string such as \"100ms\" or \"10m\", found an integer",
    );
}

#[test]
fn paths_must_be_absolute() {
    assert_error(
        "[agent]\nstate_dir = \"var/lib/ftagent\"\n",
        2,
        13,
        "agent.state_dir",
        "\"var/lib/ftagent\" is not an absolute path",
    );
    assert_error(
        "[agent]\ncontrol_socket = \"\"\n",
        2,
        18,
        "agent.control_socket",
        "not an absolute path",
    );
}

#[test]
fn port_zero() {
    assert_error(
        "[[service]]\nport = 0\n",
        2,
        8,
        "service[1].port",
        "0 is out of range: a port must be between 1 and 65535",
    );
    assert_error(
        "[[service]]\nport = 65536\n",
        2,
        8,
        "service[1].port",
        "out of range",
    );
    assert_error(
        "[[service]]\nport = -1\n",
        2,
        8,
        "service[1].port",
        "out of range",
    );
    assert_error(
        "[[service]]\nport = \"0\"\n",
        2,
        8,
        "service[1].port",
        "out of range",
    );
    assert_error(
        "[[service]]\nport = 99999999999999999999999999999999999999999\n",
        2,
        8,
        "service[1].port",
        "out of range",
    );
}

#[test]
fn reversed_port_range() {
    assert_error(
        "[[service]]\nport = \"90-80\"\n",
        2,
        8,
        "service[1].port",
        "\"90-80\" is not a valid port range: the first port (90) is greater than the last (80)",
    );
}

#[test]
fn port_strings() {
    assert_eq!(parse_port_range("443"), Ok(range(443, 443)));
    assert_eq!(parse_port_range("8000-8100"), Ok(range(8000, 8100)));
    assert_eq!(parse_port_range("8000 - 8100"), Ok(range(8000, 8100)));
    assert_eq!(parse_port_range("1-65535"), Ok(range(1, 65535)));
    assert_eq!(parse_port_range("80-80"), Ok(range(80, 80)));
    for bad in [
        "",
        "-",
        "80-",
        "-80",
        "http",
        "80-90-100",
        "+80",
        "1-70000",
        "0-10",
    ] {
        assert!(parse_port_range(bad).is_err(), "{bad}");
    }
    assert_eq!(range(80, 80).to_string(), "80");
    assert_eq!(range(8000, 8100).to_string(), "8000-8100");
}

#[test]
fn bad_proto() {
    assert_error(
        "[[service]]\nport = 22\nproto = \"icmp\"\n",
        3,
        9,
        "service[1].proto",
        "\"icmp\" is not a protocol: expected \"tcp\" or \"udp\"",
    );
    assert_eq!(Proto::Udp.to_string(), "udp");
}

#[test]
fn service_needs_a_port() {
    assert_error(
        "[[service]]\nport = 22\n[[service]]\nproto = \"udp\"\n",
        3,
        1,
        "service[2].port",
        "missing: every [[service]] needs a port",
    );
}

#[test]
fn service_shape_errors() {
    assert_error(
        "[service]\nport = 22\n",
        1,
        1,
        "service",
        "expected one or more [[service]] tables, found a table",
    );
    assert_error("service = []\n", 1, 11, "service", "lists no services");
    assert_error("service = [22]\n", 1, 12, "service[1]", "found an integer");
    assert_error(
        "[[service]]\nport = true\n",
        2,
        8,
        "service[1].port",
        "found a boolean",
    );
}

#[test]
fn overlapping_services_are_rejected() {
    assert_error(
        "[[service]]\nport = 80\n[[service]]\nport = \"79-90\"\n",
        4,
        8,
        "service[2].port",
        "79-90/tcp overlaps service[1] (80/tcp)",
    );
    // Same ports on different protocols are fine.
    assert!(parse("[[service]]\nport = 53\n[[service]]\nport = 53\nproto = \"udp\"\n").is_ok());
}

#[test]
fn cidr_with_host_bits() {
    assert_error(
        "[safelist]\ncidrs = [\"10.0.0.0/8\", \"10.0.0.1/24\"]\n",
        2,
        24,
        "safelist.cidrs[2]",
        "10.0.0.1/24 has host bits set (did you mean 10.0.0.0/24?)",
    );
    assert_error(
        "[safelist]\ncidrs = [\n  \"fd00::1/8\",\n]\n",
        3,
        3,
        "safelist.cidrs[1]",
        "did you mean fd00::/8?",
    );
    assert_error(
        "[safelist]\ncidrs = [\"nope\"]\n",
        2,
        10,
        "safelist.cidrs[1]",
        "not an IP address or CIDR",
    );
    assert_error(
        "[safelist]\ncidrs = [\"10.0.0.0/33\"]\n",
        2,
        10,
        "safelist.cidrs[1]",
        "\"10.0.0.0/33\": prefix length 33 is out of range for IPv4 (0-32)",
    );
    assert_error(
        "[safelist]\ncidrs = [1]\n",
        2,
        10,
        "safelist.cidrs[1]",
        "found an integer",
    );
    assert_error(
        "[safelist]\ncidrs = \"10.0.0.0/8\"\n",
        2,
        9,
        "safelist.cidrs",
        "expected a list of CIDRs",
    );
}

#[test]
fn string_where_integer_expected() {
    assert_error(
        "[detection]\nfloor_pps = \"5000\"\n",
        2,
        13,
        "detection.floor_pps",
        "expected an integer, found a string",
    );
    assert_error(
        "[detection]\nfloor_pps = 0\n",
        2,
        13,
        "detection.floor_pps",
        "floor_pps must be at least 1",
    );
    assert_error(
        "[nft]\nban4_size = 16777217\n",
        2,
        13,
        "nft.ban4_size",
        "a set size must be between 1 and 16777216",
    );
    assert_error(
        "[nft]\nban6_size = 1.5\n",
        2,
        13,
        "nft.ban6_size",
        "found a float",
    );
    assert_error(
        "[nft]\ncompat = \"new\"\n",
        2,
        10,
        "nft.compat",
        "\"new\" is not a compat mode",
    );
    assert_error(
        "[nft]\niptables_shim = \"xtables\"\n",
        2,
        17,
        "nft.iptables_shim",
        "\"xtables\" is not an iptables_shim mode",
    );
}

#[test]
fn detection_keys_out_of_range() {
    assert_error(
        "[detection]\nk = -1\n",
        2,
        5,
        "detection.k",
        "-1 is out of range: k must be between 0 and 1000",
    );
    assert_error(
        "[detection]\nm = 0.5\n",
        2,
        5,
        "detection.m",
        "0.5 is out of range: m must be between 1 and 1000",
    );
    assert_error(
        "[detection]\nm = nan\n",
        2,
        5,
        "detection.m",
        "nan is out of range",
    );
    assert_error(
        "[detection]\nk = \"6\"\n",
        2,
        5,
        "detection.k",
        "expected a number, found a string",
    );
    assert_error(
        "[detection]\nhalf_life = \"5s\"\n",
        2,
        13,
        "detection.half_life",
        "\"5s\" is too short: the half-life must be between 10s and 7 days",
    );
    assert_error(
        "[detection]\nconsecutive_ticks = 0\n",
        2,
        21,
        "detection.consecutive_ticks",
        "0 is out of range: consecutive_ticks must be between 1 and 100",
    );
    assert_error(
        "[detection]\nconsecutive_ticks = 101\n",
        2,
        21,
        "detection.consecutive_ticks",
        "101 is out of range",
    );
    assert_error(
        "[detection]\nhold = \"2h\"\n",
        2,
        8,
        "detection.hold",
        "\"2h\" is too long: the hold time must be between 0s and 1h",
    );
    assert_error(
        "[detection]\nfloor_new_per_second = 0\n",
        2,
        24,
        "detection.floor_new_per_second",
        "floor_new_per_second must be at least 1",
    );
    assert_error(
        "[detection]\nmax_connections_per_source = 0\n",
        2,
        30,
        "detection.max_connections_per_source",
        "must be between 1 and 10000000",
    );
    assert_error(
            "[detection]\nfloor = 1\n",
            2,
            1,
            "detection.floor",
            "unknown key; the keys of [detection] are: floor_pps, k, m, half_life, consecutive_ticks, hold, floor_new_per_second, max_connections_per_source, instant_factor, ceiling_pps, link_mbps",
        );
}

/// Issue 14: the warm-up ceiling and the link speed it is drawn from are "auto" or an
/// integer in range; a misspelt key gets a suggestion.
#[test]
fn ceiling_keys_are_auto_or_in_range() {
    let config = parse("[detection]\nceiling_pps = 40_000\nlink_mbps = 10000\n").unwrap();
    assert_eq!(config.detection.ceiling_pps, Some(40_000));
    assert_eq!(config.detection.link_mbps, Some(10_000));
    let config = parse("[detection]\nceiling_pps = \"auto\"\nlink_mbps = \"auto\"\n").unwrap();
    assert_eq!(config.detection, Config::default().detection);
    assert_error(
        "[detection]\nceiling_pps = 0\n",
        2,
        15,
        "detection.ceiling_pps",
        "ceiling_pps must be \"auto\" or between 1 and 1000000000",
    );
    assert_error(
        "[detection]\nceiling_pps = \"40000\"\n",
        2,
        15,
        "detection.ceiling_pps",
        "\"40000\" is not allowed: ceiling_pps must be \"auto\" or between 1",
    );
    assert_error(
        "[detection]\nlink_mbps = 10_000_001\n",
        2,
        13,
        "detection.link_mbps",
        "link_mbps must be \"auto\" or between 1 and 10000000",
    );
    assert_error(
        "[detection]\nlink_mbps = 1.5\n",
        2,
        13,
        "detection.link_mbps",
        "expected an integer, found a float",
    );
    assert_error(
        "[detection]\nceiling_ps = 1\n",
        2,
        1,
        "detection.ceiling_ps",
        "unknown key (did you mean \"ceiling_pps\"?)",
    );
}

#[test]
fn on_stop_is_keep_or_remove() {
    assert_eq!(
        parse("[mitigation]\non_stop = \"remove\"\n")
            .unwrap()
            .mitigation
            .on_stop,
        OnStop::Remove
    );
    let err = parse("[mitigation]\non_stop = \"flush\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mitigation.on_stop") && err.contains("\"keep\" or \"remove\""),
        "{err}"
    );
}

#[test]
fn mitigation_section_alone_keeps_other_defaults() {
    let config = parse(
        "[mitigation]\nmode = \"monitor\"\nmax_bans_per_second = 1\n\
             min_source_share = 0.001\nprefix_after = 2\nssh_port = 1\n",
    )
    .unwrap();
    assert_eq!(
        config.mitigation,
        Mitigation {
            mode: Mode::Monitor,
            max_bans_per_second: 1,
            min_source_share: 0.001,
            prefix_after: 2,
            ssh_port: 1,
            ..Mitigation::default()
        }
    );
    assert_eq!(config.mitigation.ban_duration, Duration::from_secs(600));
    assert!(config.mitigation.auto_safelist);
    assert_eq!(config.mitigation.port_limit_pps, 10_000);
    assert_eq!(config.mitigation.source_limit_pps, 200);
    assert_eq!(config.mitigation.new_connections_per_source, 20);
    assert_eq!(
        config.mitigation.aggregate_duration,
        Duration::from_secs(120)
    );
    assert_eq!(config.detection, Config::default().detection);

    let config = parse(
        "[mitigation]\nport_limit_pps = 1\nicmp_limit_pps = 1_000_000\n\
             fragment_limit_pps = 0x10\naggregate_duration = \"10s\"\n",
    )
    .unwrap();
    assert_eq!(
        config.mitigation,
        Mitigation {
            port_limit_pps: 1,
            icmp_limit_pps: 1_000_000,
            fragment_limit_pps: 16,
            aggregate_duration: Duration::from_secs(10),
            ..Mitigation::default()
        }
    );
    let config =
        parse("[mitigation]\nsource_limit_pps = 1\nnew_connections_per_source = 0x40\n").unwrap();
    assert_eq!(
        config.mitigation,
        Mitigation {
            source_limit_pps: 1,
            new_connections_per_source: 64,
            ..Mitigation::default()
        }
    );
    let config =
        parse("mitigation.source_limit_pps = 5_000\nmitigation.new_connections_per_source = 1\n")
            .unwrap();
    assert_eq!(
        config.mitigation,
        Mitigation {
            source_limit_pps: 5_000,
            new_connections_per_source: 1,
            ..Mitigation::default()
        }
    );
    let config = parse("mitigation.aggregate_duration = \"1h\"\n").unwrap();
    assert_eq!(
        config.mitigation,
        Mitigation {
            aggregate_duration: Duration::from_secs(3600),
            ..Mitigation::default()
        }
    );

    let config = parse(
        "mitigation.ssh_port = 65535
",
    )
    .unwrap();
    assert_eq!(config.mitigation.ssh_port, 65535);
    assert_eq!(config.mitigation.mode, Mode::Mitigate);
    assert_eq!(Mode::Mitigate.to_string(), "mitigate");
    assert_eq!(Mode::Monitor.to_string(), "monitor");
}

#[test]
fn mitigation_keys_out_of_range() {
    assert_error(
        "[mitigation]\nmode = \"block\"\n",
        2,
        8,
        "mitigation.mode",
        "\"block\" is not a mode: use \"mitigate\" or \"monitor\"",
    );
    assert_error(
        "[mitigation]\nmode = true\n",
        2,
        8,
        "mitigation.mode",
        "expected \"mitigate\" or \"monitor\", found a boolean",
    );
    assert_error(
        "[mitigation]\nmax_bans_per_second = 0\n",
        2,
        23,
        "mitigation.max_bans_per_second",
        "0 is out of range: max_bans_per_second must be between 1 and 10000",
    );
    assert_error(
        "[mitigation]\nmax_bans_per_second = 10001\n",
        2,
        23,
        "mitigation.max_bans_per_second",
        "10001 is out of range",
    );
    assert_error(
        "[mitigation]\nmax_bans_per_second = 50.0\n",
        2,
        23,
        "mitigation.max_bans_per_second",
        "expected an integer, found a float",
    );
    assert_error(
        "[mitigation]\nmin_source_share = 0.0005\n",
        2,
        20,
        "mitigation.min_source_share",
        "0.0005 is out of range: min_source_share must be between 0.001 and 1",
    );
    assert_error(
        "[mitigation]\nmin_source_share = 1.5\n",
        2,
        20,
        "mitigation.min_source_share",
        "1.5 is out of range",
    );
    assert_error(
        "[mitigation]\nmin_source_share = 0\n",
        2,
        20,
        "mitigation.min_source_share",
        "0 is out of range",
    );
    assert_error(
        "[mitigation]\nmin_source_share = nan\n",
        2,
        20,
        "mitigation.min_source_share",
        "nan is out of range",
    );
    assert_error(
        "[mitigation]\nmin_source_share = \"5%\"\n",
        2,
        20,
        "mitigation.min_source_share",
        "expected a number, found a string",
    );
    assert_error(
        "[mitigation]\nprefix_after = 1\n",
        2,
        16,
        "mitigation.prefix_after",
        "1 is out of range: prefix_after must be between 2 and 256",
    );
    assert_error(
        "[mitigation]\nprefix_after = 257\n",
        2,
        16,
        "mitigation.prefix_after",
        "257 is out of range",
    );
    assert_error(
        "[mitigation]\nauto_safelist = \"yes\"\n",
        2,
        17,
        "mitigation.auto_safelist",
        "expected true or false, found a string",
    );
    assert_error(
        "[mitigation]\nauto_safelist = 1\n",
        2,
        17,
        "mitigation.auto_safelist",
        "expected true or false, found an integer",
    );
    assert_error(
        "[mitigation]\nssh_port = 0\n",
        2,
        12,
        "mitigation.ssh_port",
        "0 is out of range: the SSH port must be between 1 and 65535",
    );
    assert_error(
        "[mitigation]\nssh_port = 65536\n",
        2,
        12,
        "mitigation.ssh_port",
        "65536 is out of range",
    );
    assert_error(
        "[mitigation]\nssh_port = \"22\"\n",
        2,
        12,
        "mitigation.ssh_port",
        "expected an integer, found a string",
    );
    assert_error(
            "[mitigation]\nban_duration = \"10m\"\nmax_bans = 10\n",
            3,
            1,
            "mitigation.max_bans",
            "unknown key; the keys of [mitigation] are: ban_duration, mode, max_bans_per_second, min_source_share, prefix_after, auto_safelist, ssh_port, port_limit_pps, source_limit_pps, new_connections_per_source, icmp_limit_pps, fragment_limit_pps, closed_port_limit_pps, aggregate_duration",
        );
    assert_error(
        "[mitigation]\nmodes = \"monitor\"\n",
        2,
        1,
        "mitigation.modes",
        "unknown key (did you mean \"mode\"?)",
    );
    assert_error(
        "[mitigation]\nicmp_limt_pps = 100\n",
        2,
        1,
        "mitigation.icmp_limt_pps",
        "unknown key (did you mean \"icmp_limit_pps\"?)",
    );
}

#[test]
fn aggregate_limits_out_of_range() {
    assert_error(
        "[mitigation]\nclosed_port_limit_pps = 1_000_001\n",
        2,
        25,
        "mitigation.closed_port_limit_pps",
        "1000001 is out of range: closed_port_limit_pps must be between 0 (drop) and 1000000",
    );
    assert_error(
        "[mitigation]\nclosed_port_limit_pps = -1\n",
        2,
        25,
        "mitigation.closed_port_limit_pps",
        "out of range",
    );
    assert_error(
        "[mitigation]\nport_limit_pps = 0\n",
        2,
        18,
        "mitigation.port_limit_pps",
        "0 is out of range: port_limit_pps must be between 1 and 10000000",
    );
    assert_error(
        "[mitigation]\nport_limit_pps = 10_000_001\n",
        2,
        18,
        "mitigation.port_limit_pps",
        "10000001 is out of range",
    );
    assert_error(
        "[mitigation]\nport_limit_pps = -5\n",
        2,
        18,
        "mitigation.port_limit_pps",
        "-5 is out of range",
    );
    assert_error(
        "[mitigation]\nport_limit_pps = \"10000\"\n",
        2,
        18,
        "mitigation.port_limit_pps",
        "expected an integer, found a string",
    );
    assert_error(
        "[mitigation]\nicmp_limit_pps = 0\n",
        2,
        18,
        "mitigation.icmp_limit_pps",
        "0 is out of range: icmp_limit_pps must be between 1 and 1000000",
    );
    assert_error(
        "[mitigation]\nicmp_limit_pps = 1000001\n",
        2,
        18,
        "mitigation.icmp_limit_pps",
        "1000001 is out of range",
    );
    assert_error(
        "[mitigation]\nicmp_limit_pps = 500.0\n",
        2,
        18,
        "mitigation.icmp_limit_pps",
        "expected an integer, found a float",
    );
    assert_error(
        "[mitigation]\nfragment_limit_pps = 0\n",
        2,
        22,
        "mitigation.fragment_limit_pps",
        "0 is out of range: fragment_limit_pps must be between 1 and 1000000",
    );
    assert_error(
        "[mitigation]\nfragment_limit_pps = 1_000_001\n",
        2,
        22,
        "mitigation.fragment_limit_pps",
        "1000001 is out of range",
    );
    assert_error(
        "[mitigation]\nfragment_limit_pps = true\n",
        2,
        22,
        "mitigation.fragment_limit_pps",
        "expected an integer, found a boolean",
    );
    assert_error(
        "[mitigation]\nsource_limit_pps = 0\n",
        2,
        20,
        "mitigation.source_limit_pps",
        "0 is out of range: source_limit_pps must be between 1 and 10000000",
    );
    assert_error(
        "[mitigation]\nsource_limit_pps = 10_000_001\n",
        2,
        20,
        "mitigation.source_limit_pps",
        "10000001 is out of range",
    );
    assert_error(
        "[mitigation]\nsource_limit_pps = -1\n",
        2,
        20,
        "mitigation.source_limit_pps",
        "-1 is out of range",
    );
    assert_error(
        "[mitigation]\nsource_limit_pps = 200.0\n",
        2,
        20,
        "mitigation.source_limit_pps",
        "expected an integer, found a float",
    );
    assert_error(
        "[mitigation]\nsource_limit_pps = \"200\"\n",
        2,
        20,
        "mitigation.source_limit_pps",
        "expected an integer, found a string",
    );
    assert_error(
        "[mitigation]\nnew_connections_per_source = 0\n",
        2,
        30,
        "mitigation.new_connections_per_source",
        "0 is out of range: new_connections_per_source must be between 1 and 100000",
    );
    assert_error(
        "[mitigation]\nnew_connections_per_source = 100_001\n",
        2,
        30,
        "mitigation.new_connections_per_source",
        "100001 is out of range",
    );
    assert_error(
        "[mitigation]\nnew_connections_per_source = -20\n",
        2,
        30,
        "mitigation.new_connections_per_source",
        "-20 is out of range",
    );
    assert_error(
        "[mitigation]\nnew_connections_per_source = true\n",
        2,
        30,
        "mitigation.new_connections_per_source",
        "expected an integer, found a boolean",
    );
    assert_error(
        "[mitigation]\nnew_connections_per_source = [20]\n",
        2,
        30,
        "mitigation.new_connections_per_source",
        "expected an integer, found an array",
    );
    assert_error(
        "[mitigation]\nsource_limit_pps = 100\nnew_connections_per_source = 100001\n",
        3,
        30,
        "mitigation.new_connections_per_source",
        "100001 is out of range",
    );
    assert_error(
        "[mitigation]\nsource_limt_pps = 100\n",
        2,
        1,
        "mitigation.source_limt_pps",
        "unknown key (did you mean \"source_limit_pps\"?)",
    );
    assert_error(
        "[mitigation]\naggregate_duration = \"9s\"\n",
        2,
        22,
        "mitigation.aggregate_duration",
        "\"9s\" is too short: the aggregate duration must be between 10s and 1h",
    );
    assert_error(
        "[mitigation]\naggregate_duration = \"1h 1s\"\n",
        2,
        22,
        "mitigation.aggregate_duration",
        "\"1h 1s\" is too long: the aggregate duration must be between 10s and 1h",
    );
    assert_error(
        "[mitigation]\naggregate_duration = \"2 fortnights\"\n",
        2,
        22,
        "mitigation.aggregate_duration",
        "\"2 fortnights\" is not a duration",
    );
    assert_error(
        "[mitigation]\naggregate_duration = 120\n",
        2,
        22,
        "mitigation.aggregate_duration",
        "expected a duration string such as \"100ms\" or \"10m\", found an integer",
    );
    assert_eq!(
            error("[mitigation]\nmode = \"monitor\"\n\naggregate_duration = \"5s\"\n"),
            "/etc/ftagent/ftagent.toml:4:22: mitigation.aggregate_duration: \"5s\" is too short: the aggregate duration must be between 10s and 1h"
        );
}

#[test]
fn service_detection_keys() {
    assert_error(
        "[[service]]\nport = 80\nfloor_pps = 0\n",
        3,
        13,
        "service[1].floor_pps",
        "floor_pps must be at least 1",
    );
    assert_error(
        "[[service]]\nport = 80\nweb = \"yes\"\n",
        3,
        7,
        "service[1].web",
        "expected true or false, found a string",
    );
    assert_error(
        "[[service]]\nport = 443\nproto = \"udp\"\nweb = true\n",
        4,
        7,
        "service[1].web",
        "web = true applies to tcp services only",
    );
    let config = parse("[[service]]\nport = 443\nproto = \"udp\"\nweb = false\n").unwrap();
    assert!(!config.services[0].is_web());
    let config = parse("[[service]]\nport = \"8000-8100\"\nfloor_pps = 100\n").unwrap();
    assert!(config.services[0].is_web()); // 8080 is inside
    assert_eq!(config.services[0].floor_pps, Some(100));
}

#[test]
fn sense_section_alone_keeps_other_defaults() {
    let config = parse(
        "[sense]\nnflog_group = 1\nsample_rate = 10\nsnaplen = 1500\n\
             amplification_ports = []\nconntrack_interval = \"1s\"\n",
    )
    .unwrap();
    assert_eq!(
        config.sense,
        Sense {
            nflog_group: 1,
            tripwire_group: 7048,
            sample_rate: 10,
            snaplen: 1500,
            amplification_ports: Vec::new(),
            conntrack_interval: Duration::from_secs(1),
        }
    );
    assert_eq!(config.detection, Config::default().detection);

    let config = parse("sense.snaplen = 96\n").unwrap();
    assert_eq!(config.sense.snaplen, 96);
    assert_eq!(config.sense.nflog_group, 7047);
    assert_eq!(
        config.sense.amplification_ports,
        DEFAULT_AMPLIFICATION_PORTS
    );
    assert_eq!(config.sense.conntrack_interval, Duration::from_secs(5));
}

#[test]
fn sense_integers_out_of_range() {
    assert_error(
        "[sense]\nnflog_group = 0\n",
        2,
        15,
        "sense.nflog_group",
        "0 is out of range: the NFLOG group must be between 1 and 65535",
    );
    assert_error(
        "[sense]\nnflog_group = 65536\n",
        2,
        15,
        "sense.nflog_group",
        "65536 is out of range",
    );
    assert_error(
        "[sense]\nnflog_group = \"7047\"\n",
        2,
        15,
        "sense.nflog_group",
        "expected an integer, found a string",
    );
    assert_error(
        "[sense]\nsample_rate = 9\n",
        2,
        15,
        "sense.sample_rate",
        "9 is out of range: the sample rate must be between 10 and 100000",
    );
    assert_error(
        "[sense]\nsample_rate = 100001\n",
        2,
        15,
        "sense.sample_rate",
        "out of range",
    );
    assert_error(
        "[sense]\nsnaplen = 39\n",
        2,
        11,
        "sense.snaplen",
        "39 is out of range: snaplen must be between 40 and 1500",
    );
    assert_error(
        "[sense]\nsnaplen = 1501\n",
        2,
        11,
        "sense.snaplen",
        "out of range",
    );
    assert_error(
        "[sense]\nsnaplen = 128.0\n",
        2,
        11,
        "sense.snaplen",
        "found a float",
    );
}

#[test]
fn sense_conntrack_interval_range() {
    assert_error(
        "[sense]\nconntrack_interval = \"500ms\"\n",
        2,
        22,
        "sense.conntrack_interval",
        "\"500ms\" is too short: the conntrack interval must be between 1s and 1h",
    );
    assert_error(
        "[sense]\nconntrack_interval = \"61m\"\n",
        2,
        22,
        "sense.conntrack_interval",
        "\"61m\" is too long",
    );
    assert_error(
        "[sense]\nconntrack_interval = 5\n",
        2,
        22,
        "sense.conntrack_interval",
        "expected a duration string",
    );
}

#[test]
fn amplification_port_out_of_range() {
    assert_error(
        "[sense]\namplification_ports = [53, 123, 70000]\n",
        2,
        33,
        "sense.amplification_ports[3]",
        "70000 is out of range: a port must be between 1 and 65535",
    );
    assert_error(
        "[sense]\namplification_ports = [\n  53,\n  0,\n]\n",
        4,
        3,
        "sense.amplification_ports[2]",
        "0 is out of range",
    );
    assert_error(
        "[sense]\namplification_ports = [53, \"123\"]\n",
        2,
        28,
        "sense.amplification_ports[2]",
        "expected an integer, found a string",
    );
}

#[test]
fn duplicate_amplification_port() {
    assert_error(
        "[sense]\namplification_ports = [53, 123, 161, 123]\n",
        2,
        38,
        "sense.amplification_ports[4]",
        "123 is already listed as sense.amplification_ports[2]; each port may be listed only once",
    );
    // Written differently, still the same port.
    assert_error(
        "[sense]\namplification_ports = [0x35, 53]\n",
        2,
        30,
        "sense.amplification_ports[2]",
        "53 is already listed as sense.amplification_ports[1]",
    );
}

#[test]
fn too_many_amplification_ports() {
    let list = |count: u16| {
        let ports: Vec<String> = (1..=count).map(|p| p.to_string()).collect();
        format!("[sense]\namplification_ports = [{}]\n", ports.join(", "))
    };
    let config = parse(&list(64)).unwrap();
    assert_eq!(config.sense.amplification_ports.len(), 64);
    assert_error(
        &list(65),
        2,
        23,
        "sense.amplification_ports",
        "lists 65 ports, but at most 64 are allowed",
    );
}

#[test]
fn amplification_ports_shape_errors() {
    assert_error(
        "[sense]\namplification_ports = 53\n",
        2,
        23,
        "sense.amplification_ports",
        "expected a list of ports such as [53, 123], found an integer",
    );
    assert_error(
        "[sense]\namplification_ports = [[53]]\n",
        2,
        24,
        "sense.amplification_ports[1]",
        "expected an integer, found an array",
    );
}

#[test]
fn unknown_key_in_sense() {
    assert_error(
            "[sense]\nsnaplen = 128\nsnap_len = 96\n",
            3,
            1,
            "sense.snap_len",
            "unknown key (did you mean \"snaplen\"?); the keys of [sense] are: nflog_group, tripwire_group, sample_rate, snaplen, amplification_ports, conntrack_interval",
        );
    assert_error(
        "sense = []\n",
        1,
        9,
        "sense",
        "expected a table [sense], found an array",
    );
}

#[test]
fn table_of_wrong_type() {
    assert_error(
        "agent = 5\n",
        1,
        9,
        "agent",
        "expected a table [agent], found an integer",
    );
    assert_error(
        "[[nft]]\n",
        1,
        1,
        "nft",
        "expected a table [nft], found an array",
    );
}

#[test]
fn syntax_errors_name_the_nearest_key() {
    let message = error("[agent]\ntick = \"100ms\n");
    assert!(message.starts_with(&format!("{ORIGIN}:2:")), "{message}");
    assert!(message.contains(": agent.tick: "), "{message}");

    let message = error("[[service]]\nport = 22\n[[service]]\nport = = 80\n");
    assert!(message.starts_with(&format!("{ORIGIN}:4:")), "{message}");
    assert!(message.contains(": service[2].port: "), "{message}");

    let message = error("[agent\n");
    assert!(message.starts_with(&format!("{ORIGIN}:1:")), "{message}");
    assert!(message.contains(": -: "), "{message}");

    let message = error("[agent]\ntick = \"1s\"\ntick = \"2s\"\n");
    assert!(
        message.starts_with(&format!("{ORIGIN}:3:1: agent.tick: ")),
        "{message}"
    );
}

#[test]
fn reports_the_earliest_problem_in_the_file() {
    assert_error(
        "[nft]\ncompat = \"x\"\n[agent]\ntick = \"1ms\"\n",
        2,
        10,
        "nft.compat",
        "compat mode",
    );
}

#[test]
fn columns_count_characters() {
    assert_eq!(line_column("é = 1", 2), (1, 2));
    assert_eq!(line_column("é = 1", 3), (1, 3));
    assert_eq!(line_column("a\nbc", 3), (2, 2));
    assert_eq!(line_column("a", 99), (1, 2));
    assert_eq!(line_column("é", 1), (1, 1));
}

#[test]
fn never_panics_on_odd_input() {
    for text in [
        "\u{feff}",
        "[",
        "[[",
        "=",
        "\"",
        "a.b.c.d = 1",
        "[agent]\ntick = \"\"",
        "[agent]\ntick = \"18446744073709551616s\"",
        "[[service]]\nport = \"\u{0}\"",
        "agent = { tick = { x = 1 } }",
        "service = [[1, 2]]",
        "[safelist]\ncidrs = [[\"10.0.0.0/8\"]]",
        "[nft]\nban4_size = -0",
        "x = 1979-05-27T07:32:00Z",
    ] {
        let _ = parse(text);
    }
}

#[test]
fn load_reports_missing_explicit_file() {
    let missing = Path::new("/nonexistent/ftagent-test.toml");
    let error = Config::load(Some(missing)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot read /nonexistent/ftagent-test.toml: No such file or directory"
    );
}

#[test]
fn load_falls_back_to_defaults() {
    let (config, source) = load_from(None, Path::new("/nonexistent/ftagent-default.toml")).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(source, ConfigSource::Defaults);
}

#[test]
fn load_reads_files() {
    let dir = std::env::temp_dir().join(format!("ftagent-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ftagent.toml");
    std::fs::write(&path, "[detection]\nfloor_pps = 42\n").unwrap();

    let (config, source) = Config::load(Some(&path)).unwrap();
    assert_eq!(config.detection.floor_pps, 42);
    assert_eq!(source, ConfigSource::File(path.clone()));

    let (config, source) = load_from(None, &path).unwrap();
    assert_eq!(config.detection.floor_pps, 42);
    assert_eq!(source, ConfigSource::File(path.clone()));

    std::fs::write(&path, "[detection]\nfloor_pps = 0\n").unwrap();
    let error = Config::load(Some(&path)).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{}:2:13: detection.floor_pps: ", path.display())),
        "{error}"
    );

    // A directory where the file should be is a read error, not "defaults".
    let error = load_from(None, &dir).unwrap_err().to_string();
    assert!(error.starts_with("cannot read "), "{error}");

    std::fs::remove_dir_all(&dir).unwrap();
}

/// docs/configuration.md's default file and key tables are drawn from the descriptors
/// (src/config/keys.rs); `FTAGENT_BLESS=1 cargo test --lib config::tests::docs` rewrites them.
#[test]
fn docs_agree_with_the_descriptors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap();
    let fresh = regenerate_docs(&text);
    if std::env::var_os("FTAGENT_BLESS").is_some() {
        std::fs::write(path, &fresh).unwrap();
        return;
    }
    assert!(
        fresh == text,
        "docs/configuration.md differs from the descriptors in src/config/keys.rs; \
         FTAGENT_BLESS=1 cargo test --lib config::tests::docs rewrites it"
    );
}

#[test]
fn every_key_is_named_once_in_a_known_table() {
    let docs = all_keys();
    for (index, key) in docs.iter().enumerate() {
        let (section, leaf) = key.name.split_once('.').unwrap();
        assert!(keys::SECTIONS.contains(&section), "{}", key.name);
        assert!(!leaf.is_empty() && !leaf.contains('.'), "{}", key.name);
        assert!(!key.doc.is_empty() && !key.kind.is_empty(), "{}", key.name);
        assert!(
            docs[..index].iter().all(|k| k.name != key.name),
            "{} twice",
            key.name
        );
    }
    // Every table has keys, and the default file names each table but the webhooks.
    let file = default_file();
    for section in keys::SECTIONS {
        assert!(docs
            .iter()
            .any(|k| k.name.starts_with(&format!("{section}."))));
        let header = format!("[{section}]");
        assert_eq!(file.contains(&header), *section != "webhook", "{section}");
    }
}

#[test]
fn the_default_file_reads_as_the_defaults() {
    assert_eq!(parse(&default_file()).unwrap(), Config::default());
    assert_eq!(
        Config::default().sense.amplification_ports,
        DEFAULT_AMPLIFICATION_PORTS
    );
}

#[test]
fn a_reload_keeps_the_restart_only_keys() {
    let running = Config::default();
    let mut fresh = parse(
        "[agent]\nwarmup = \"1s\"\n[detection]\ninstant_factor = 0\nk = 2\n\
         [bgp]\nrtbh = false\n[metrics]\nenabled = false\n",
    )
    .unwrap();
    let changed = Config::keep_restart_only(&mut fresh, &running);
    assert_eq!(
        changed,
        [
            "agent.warmup",
            "detection.instant_factor",
            "bgp.*",
            "metrics.*"
        ]
    );
    assert_eq!(fresh.agent, running.agent);
    assert_eq!(fresh.bgp, running.bgp);
    assert_eq!(fresh.metrics, running.metrics);
    assert_eq!(fresh.detection.k, 2.0, "live keys are not touched");
}

/// Issue 17: the file a package installs sets nothing, names every key, and taking the `#` off
/// every setting line (`#x`) gives the defaults.
#[test]
fn the_commented_file_sets_nothing_and_uncommented_is_the_defaults() {
    let file = commented_file();
    assert!(file.lines().all(|l| l.is_empty() || l.starts_with('#')));
    assert!(file.parse::<toml::Table>().unwrap().is_empty());
    assert_eq!(parse(&file).unwrap(), Config::default());
    let uncommented: Vec<&str> = file
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .collect();
    let uncommented = uncommented.join("\n");
    assert!(uncommented.contains("\n[agent]\n"), "{uncommented}");
    assert_eq!(parse(&uncommented).unwrap(), Config::default());
    for key in all_keys() {
        let leaf = key.name.split_once('.').map_or(key.name, |(_, leaf)| leaf);
        assert!(file.contains(&format!("\n# {leaf}: ")), "{}", key.name);
    }
}
