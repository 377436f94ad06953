//! The mitigation decisions, replayed without a kernel.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::state::SAVED_HOSTS;
use super::*;
use crate::detect::SourceShare;

fn event(kind: EventKind, incident: &str, sources: &[(&str, f64)], concentrated: bool) -> Event {
    attack(
        Vector::UdpFlood,
        "udp_27015",
        kind,
        incident,
        sources,
        concentrated,
    )
}

fn attack(
    vector: Vector,
    counter: &str,
    kind: EventKind,
    incident: &str,
    sources: &[(&str, f64)],
    concentrated: bool,
) -> Event {
    Event {
        kind,
        incident: incident.to_string(),
        vector,
        proto: Some("udp"),
        ip_proto: None,
        port: Some(27015),
        port_range: None,
        counter: counter.to_string(),
        pps: 50_000.0,
        bps: 1e8,
        baseline_pps: 10.0,
        threshold_pps: 5000.0,
        warmed_up: true,
        sources: sources
            .iter()
            .map(|(a, share)| SourceShare {
                addr: a.parse::<IpAddr>().unwrap(),
                share: *share,
            })
            .collect(),
        distinct_sources: sources.len() as f64,
        concentrated,
        top_prefixes: Vec::new(),
        targets: Vec::new(),
        connections: None,
        connection_limit: None,
        duration: None,
        peak_pps: None,
        pcap: None,
    }
}

fn mitigator(safelist: &[&str]) -> Mitigator {
    Mitigator::new(
        &Config::default(),
        safelist.iter().map(|s| s.parse().unwrap()).collect(),
    )
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn tick(m: &mut Mitigator, events: &[Event], at_ms: u64) -> (Vec<Change>, Vec<MitigationEvent>) {
    let (mut changes, mut out) = (Vec::new(), Vec::new());
    m.plan(events, Duration::from_millis(at_ms), &mut changes, &mut out);
    (changes, out)
}

#[test]
fn a_concentrated_flood_bans_its_heavy_sources_and_the_end_lifts_them() {
    let mut m = mitigator(&[]);
    let start = event(
        EventKind::AttackStart,
        "i-1",
        &[("10.250.0.1", 0.97), ("10.250.0.9", 0.01)],
        true,
    );
    let (changes, out) = tick(&mut m, &[start], 0);
    let ten_minutes = Duration::from_secs(600);
    assert_eq!(
        changes,
        vec![Change::Ban {
            cidr: cidr("10.250.0.1"),
            timeout: ten_minutes
        }]
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].applied && out[0].addresses == vec![cidr("10.250.0.1")]);

    // While it lasts, updates refresh the ban without a new event.
    let update = event(EventKind::AttackUpdate, "i-1", &[("10.250.0.1", 0.9)], true);
    let (changes, out) = tick(&mut m, &[update], 1000);
    assert_eq!(
        changes,
        vec![Change::Ban {
            cidr: cidr("10.250.0.1"),
            timeout: ten_minutes
        }]
    );
    assert!(out.is_empty());

    let end = event(EventKind::AttackEnd, "i-1", &[], true);
    let (changes, out) = tick(&mut m, &[end], 12_000);
    assert_eq!(
        changes,
        vec![Change::Unban {
            cidr: cidr("10.250.0.1")
        }]
    );
    assert!(!out[0].applied);
    let line: serde_json::Value = serde_json::from_str(&out[0].to_json(SystemTime::now())).unwrap();
    assert_eq!(line["event"], "mitigation_removed");
    assert_eq!(line["addresses"][0], "10.250.0.1");
}

/// Issue 15: the heavy sources that are safelisted are never banned; the others are, and the
/// safelisted share of the flood gets the port limit (which the kernel applies to all).
#[test]
fn safelisted_sources_are_never_banned_and_their_share_is_limited() {
    let mut m = mitigator(&["10.250.0.0/30", "fd00:250::1"]);
    let start = event(
        EventKind::AttackStart,
        "i-1",
        &[
            ("10.250.0.1", 0.5),
            ("fd00:250::1", 0.3),
            ("10.250.0.7", 0.2),
        ],
        true,
    );
    let (changes, _) = tick(&mut m, &[start], 0);
    assert_eq!(
        changes,
        vec![
            Change::Enable {
                measure: Measure::LimitUdpPort(27015),
                timeout: Duration::from_secs(120)
            },
            Change::Ban {
                cidr: cidr("10.250.0.7"),
                timeout: Duration::from_secs(600)
            }
        ]
    );
}

/// Issue 15, item 4: a flood spoofing the gateway (safelisted) to a closed UDP port gets the
/// port limit, start and updates alike, and the gateway never enters a ban set.
#[test]
fn issue15_a_flood_spoofing_a_safelisted_gateway_gets_the_port_limit_not_a_ban() {
    for gateway in ["10.250.0.3", "fd00:250::3"] {
        let mut m = mitigator(&[gateway]);
        let mut flood = event(EventKind::AttackStart, "i-1", &[(gateway, 1.0)], true);
        flood.port = Some(40_000);
        let (changes, out) = tick(&mut m, &[flood.clone()], 0);
        let limit = Change::Enable {
            measure: Measure::LimitUdpPort(40_000),
            timeout: Duration::from_secs(120),
        };
        assert_eq!(changes, vec![limit]);
        assert_eq!(
            (out[0].action, out[0].port),
            (Action::LimitPort, Some(40_000))
        );
        flood.kind = EventKind::AttackUpdate;
        for at in [100, 200, 5_000] {
            let (changes, out) = tick(&mut m, &[flood.clone()], at);
            assert_eq!(changes, vec![limit], "refreshed, never banned");
            assert!(out.is_empty(), "{out:?}");
        }
        assert!(m
            .measures()
            .iter()
            .all(|x| !matches!(x.target, Target::Ban(_))));
    }
}

/// Issue 15, item 7: ACK and RST floods from many sources hold the port's segments outside
/// connections (`LimitTcpPort`, after conntrack), as does one spoofing a safelisted address;
/// a TCP connection flood's real connections get their new connections metered per source.
#[test]
fn issue15_tcp_floods_get_measures_that_spare_connections() {
    let of = |vector, sources: &[(&str, f64)], concentrated| {
        let mut e = attack(
            vector,
            "tcp_80",
            EventKind::AttackStart,
            "i-1",
            sources,
            concentrated,
        );
        e.port = Some(80);
        measures_of(e)
    };
    assert_eq!(of(Vector::AckFlood, &[], false), ["LimitTcpPort(80)"]);
    assert_eq!(of(Vector::RstFlood, &[], false), ["LimitTcpPort(80)"]);
    assert_eq!(
        of(Vector::AckFlood, &[("10.250.9.9", 1.0)], true),
        ["LimitTcpPort(80)"]
    );
    assert_eq!(
        of(Vector::AckFlood, &[("10.250.0.1", 1.0)], true),
        ["ban 10.250.0.1"]
    );
    assert_eq!(
        of(Vector::TcpConnectionFlood, &[], false),
        ["MeterNewConnections(80)"]
    );
}

#[test]
fn a_distributed_flood_holds_its_port_to_a_rate_instead_of_banning() {
    let mut m = mitigator(&[]);
    let (changes, out) = tick(
        &mut m,
        &[event(EventKind::AttackStart, "i-1", &[], false)],
        0,
    );
    let two_minutes = Duration::from_secs(120);
    assert_eq!(
        changes,
        vec![Change::Enable {
            measure: Measure::LimitUdpPort(27015),
            timeout: two_minutes
        }]
    );
    assert_eq!(
        (out[0].action, out[0].port, out[0].rate_pps),
        (Action::LimitPort, Some(27015), Some(10_000))
    );
    let (changes, out) = tick(
        &mut m,
        &[event(EventKind::AttackUpdate, "i-1", &[], false)],
        1000,
    );
    assert_eq!(changes.len(), 1, "refreshed");
    assert!(out.is_empty());
    let (changes, out) = tick(
        &mut m,
        &[event(EventKind::AttackEnd, "i-1", &[], false)],
        9000,
    );
    assert_eq!(
        changes,
        vec![Change::Disable {
            measure: Measure::LimitUdpPort(27015)
        }]
    );
    assert!(!out[0].applied);
}

#[test]
fn amplification_blocks_the_reflector_port_and_bans_no_reflector() {
    let mut m = mitigator(&[]);
    let start = attack(
        Vector::DnsAmplification,
        "amp_53",
        EventKind::AttackStart,
        "i-1",
        &[("10.250.0.1", 1.0)],
        true,
    );
    let (changes, out) = tick(&mut m, &[start], 0);
    let two_minutes = Duration::from_secs(120);
    assert_eq!(
        changes,
        vec![Change::Enable {
            measure: Measure::BlockReflector(53),
            timeout: two_minutes
        }]
    );
    assert_eq!(out[0].action, Action::BlockReflector);
}

#[test]
fn a_syn_flood_turns_syn_cookies_on_until_the_last_one_ends() {
    let mut m = mitigator(&[]);
    let a = attack(
        Vector::SynFlood,
        "tcp_syn",
        EventKind::AttackStart,
        "i-1",
        &[],
        false,
    );
    let b = attack(
        Vector::SynFlood,
        "tcp_syn",
        EventKind::AttackStart,
        "i-2",
        &[],
        false,
    );
    let (changes, _) = tick(&mut m, &[a, b], 0);
    assert_eq!(changes, vec![Change::SynCookies { on: true }]);
    let end = |i| {
        attack(
            Vector::SynFlood,
            "tcp_syn",
            EventKind::AttackEnd,
            i,
            &[],
            false,
        )
    };
    let (changes, _) = tick(&mut m, &[end("i-1")], 5000);
    assert!(changes.is_empty());
    let (changes, out) = tick(&mut m, &[end("i-2")], 6000);
    assert_eq!(changes, vec![Change::SynCookies { on: false }]);
    assert_eq!(out[0].action, Action::SynCookies);
}

/// Issue 15: a SYN flood on a TCP service port gets the SYN proxy on that port, lifted at
/// the end; SYN cookies where the proxy is off (or the kernel lacks it) or the port is no
/// service.
#[test]
fn issue15_a_syn_flood_on_a_service_port_gets_the_syn_proxy() {
    let syn = |kind, port| {
        let mut e = attack(Vector::SynFlood, "tcp_80", kind, "i-1", &[], false);
        e.proto = Some("tcp");
        e.port = port;
        e
    };
    let mut m = mitigator(&[]);
    let (changes, out) = tick(&mut m, &[syn(EventKind::AttackStart, Some(80))], 0);
    assert_eq!(
        changes,
        vec![Change::Enable {
            measure: Measure::SynProxy(80),
            timeout: Duration::from_secs(120)
        }]
    );
    assert_eq!((out[0].action, out[0].port), (Action::Synproxy, Some(80)));
    assert!(m.holds_synproxy());
    let (changes, out) = tick(&mut m, &[syn(EventKind::AttackEnd, Some(80))], 5000);
    assert_eq!(
        changes,
        vec![Change::Disable {
            measure: Measure::SynProxy(80)
        }]
    );
    assert_eq!((out[0].action, out[0].applied), (Action::Synproxy, false));
    assert!(!m.holds_synproxy());

    for (config, port) in [
        ("[mitigation]\nsynproxy = false\n", Some(80)),
        ("", Some(8080)),
    ] {
        let config = Config::from_toml(config, std::path::Path::new("t.toml")).unwrap();
        let mut m = Mitigator::new(&config, Vec::new());
        let (changes, _) = tick(&mut m, &[syn(EventKind::AttackStart, port)], 0);
        assert_eq!(changes, vec![Change::SynCookies { on: true }], "{port:?}");
    }
    // Aimed at no port: SYN cookies, and the closed ports held (issue 15, item 2).
    let mut m = mitigator(&[]);
    let (changes, _) = tick(&mut m, &[syn(EventKind::AttackStart, None)], 0);
    assert_eq!(
        changes,
        vec![
            Change::Enable {
                measure: Measure::LimitClosedPorts(IPPROTO_TCP),
                timeout: Duration::from_secs(120)
            },
            Change::SynCookies { on: true }
        ]
    );
}

#[test]
fn a_full_ban_set_escalates_to_the_aggregate_measure() {
    let mut m = mitigator(&[]);
    let start = event(EventKind::AttackStart, "i-1", &[("10.250.0.1", 1.0)], true);
    let (changes, _) = tick(&mut m, &[start], 0);
    m.rejected(&changes, true);
    let update = event(EventKind::AttackUpdate, "i-1", &[("10.250.0.1", 1.0)], true);
    let (changes, _) = tick(&mut m, &[update], 1000);
    let two_minutes = Duration::from_secs(120);
    assert_eq!(
        changes,
        vec![Change::Enable {
            measure: Measure::LimitUdpPort(27015),
            timeout: two_minutes
        }]
    );
}

/// Four hosts of 10.250.1.0/24, a fifth of the traffic each.
const CROWD: [(&str, f64); 4] = [
    ("10.250.1.1", 0.2),
    ("10.250.1.2", 0.2),
    ("10.250.1.3", 0.2),
    ("10.250.1.4", 0.2),
];

/// The reports of one incident at `times_ms` (a start, then updates), each naming `sources`;
/// the changes of each.
fn reports(m: &mut Mitigator, sources: &[(&str, f64)], times_ms: &[u64]) -> Vec<Vec<Change>> {
    times_ms
        .iter()
        .enumerate()
        .map(|(i, &at)| {
            let kind = if i == 0 {
                EventKind::AttackStart
            } else {
                EventKind::AttackUpdate
            };
            tick(m, &[event(kind, "i-1", sources, true)], at).0
        })
        .collect()
}

fn banned(changes: &[Change], what: &str) -> bool {
    changes
        .iter()
        .any(|c| matches!(c, Change::Ban { cidr: x, .. } if *x == cidr(what)))
}

#[test]
fn a_crowded_prefix_is_banned_whole_unless_it_holds_a_safelisted_address() {
    let mut m = mitigator(&[]);
    let ticks = reports(&mut m, &CROWD, &[0, 1000, 2000]);
    assert_eq!(ticks[0].len(), 4, "the hosts first: {:?}", ticks[0]);
    assert!(!banned(&ticks[1], "10.250.1.0/24"), "{:?}", ticks[1]);
    assert_eq!(
        ticks[2].last(),
        Some(&Change::Ban {
            cidr: cidr("10.250.1.0/24"),
            timeout: Duration::from_secs(600)
        })
    );

    let mut m = mitigator(&["10.250.1.200"]);
    let ticks = reports(&mut m, &CROWD, &[0, 1000, 2000, 3000]);
    assert!(
        ticks.iter().all(|t| !banned(t, "10.250.1.0/24")),
        "no prefix over a safelisted address: {ticks:?}"
    );
}

#[test]
fn new_bans_are_capped_per_second() {
    let mut config = Config::default();
    config.mitigation.max_bans_per_second = 2;
    config.mitigation.prefix_after = 256;
    let mut m = Mitigator::new(&config, Vec::new());
    let sources = [
        ("10.250.1.1", 0.25),
        ("10.250.2.1", 0.25),
        ("10.250.3.1", 0.25),
        ("10.250.4.1", 0.25),
    ];
    let (changes, _) = tick(
        &mut m,
        &[event(EventKind::AttackStart, "i-1", &sources, true)],
        0,
    );
    assert_eq!(changes.len(), 2, "two a second");
    let (changes, _) = tick(
        &mut m,
        &[event(EventKind::AttackUpdate, "i-1", &sources, true)],
        1000,
    );
    assert_eq!(
        changes.len(),
        4,
        "two refreshed, two more added: {changes:?}"
    );
}

#[test]
fn a_ban_shared_by_two_incidents_stays_until_both_end() {
    let mut m = mitigator(&[]);
    let a = event(EventKind::AttackStart, "i-1", &[("10.250.0.1", 1.0)], true);
    let b = event(EventKind::AttackStart, "i-2", &[("10.250.0.1", 1.0)], true);
    tick(&mut m, &[a, b], 0);
    let (changes, out) = tick(
        &mut m,
        &[event(EventKind::AttackEnd, "i-1", &[], true)],
        5000,
    );
    assert!(changes.is_empty() && out.is_empty());
    let (changes, _) = tick(
        &mut m,
        &[event(EventKind::AttackEnd, "i-2", &[], true)],
        6000,
    );
    assert_eq!(
        changes,
        vec![Change::Unban {
            cidr: cidr("10.250.0.1")
        }]
    );
}

#[test]
fn a_refused_batch_is_tried_again() {
    let mut m = mitigator(&[]);
    let start = event(EventKind::AttackStart, "i-1", &[("10.250.0.1", 1.0)], true);
    let (changes, _) = tick(&mut m, &[start], 0);
    m.rejected(&changes, false);
    let update = event(EventKind::AttackUpdate, "i-1", &[("10.250.0.1", 1.0)], true);
    let (_, out) = tick(&mut m, &[update], 1000);
    assert_eq!(out.len(), 1, "added again, with its event");
}

#[test]
fn a_flood_from_safelisted_sources_gets_the_aggregate_measure_instead() {
    let mut m = mitigator(&["10.250.0.3"]);
    let start = event(EventKind::AttackStart, "i-1", &[("10.250.0.3", 0.99)], true);
    let (changes, _) = tick(&mut m, &[start], 0);
    let two_minutes = Duration::from_secs(120);
    assert_eq!(
        changes,
        vec![Change::Enable {
            measure: Measure::LimitUdpPort(27015),
            timeout: two_minutes
        }]
    );
}

#[test]
fn what_is_in_force_can_be_put_back_with_the_time_it_has_left() {
    let mut m = mitigator(&[]);
    let ban = event(EventKind::AttackStart, "i-1", &[("10.250.0.1", 1.0)], true);
    let limit = event(EventKind::AttackStart, "i-2", &[], false);
    tick(&mut m, &[ban, limit], 0);
    let mut held = m.in_force(Duration::from_secs(100));
    held.sort_by_key(|h| format!("{h:?}"));
    let want = [
        InForce {
            item: Item::Ban(cidr("10.250.0.1")),
            timeout: Duration::from_secs(600),
            left: Duration::from_secs(500),
        },
        InForce {
            item: Item::Measure(Measure::LimitUdpPort(27015)),
            timeout: Duration::from_secs(120),
            left: Duration::from_secs(20),
        },
    ];
    assert_eq!(held, want);
    // The measure ran out in the kernel meanwhile: it is not put back.
    let later = m.in_force(Duration::from_secs(130));
    assert_eq!(later.len(), 1, "{later:?}");
    // A refresh restarts the clock.
    let update = event(EventKind::AttackUpdate, "i-1", &[("10.250.0.1", 1.0)], true);
    tick(&mut m, &[update], 200_000);
    assert_eq!(
        m.in_force(Duration::from_secs(200))[0].left,
        Duration::from_secs(600)
    );
}

#[test]
fn a_restart_resumes_open_incidents_and_undoes_ended_ones() {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut before = mitigator(&[]);
    let open = event(
        EventKind::AttackStart,
        "i-open",
        &[("10.250.0.1", 1.0)],
        true,
    );
    let ended = event(
        EventKind::AttackStart,
        "i-ended",
        &[("10.250.0.7", 1.0)],
        true,
    );
    tick(&mut before, &[open, ended], 0);
    let saved = before.save(Duration::from_secs(60), wall);
    assert_eq!(saved.len(), 2);

    // Restarted 100 s later (the bans have 440 s left), with only i-open still open.
    let mut after = mitigator(&[]);
    let (mut changes, mut out) = (Vec::new(), Vec::new());
    after.resume(
        saved.clone(),
        Duration::ZERO,
        wall + Duration::from_secs(100),
        &|id| id == "i-open",
        &mut changes,
        &mut out,
    );
    assert_eq!(
        changes,
        vec![Change::Unban {
            cidr: cidr("10.250.0.7")
        }]
    );
    assert_eq!(out.len(), 1);
    assert!(!out[0].applied && out[0].incident == "i-ended");
    assert_eq!(
        after.in_force(Duration::ZERO),
        vec![InForce {
            item: Item::Ban(cidr("10.250.0.1")),
            timeout: Duration::from_secs(600),
            left: Duration::from_secs(440),
        }]
    );
    // Its end lifts what the earlier run had put in.
    let end = event(EventKind::AttackEnd, "i-open", &[], false);
    let (changes, _) = tick(&mut after, &[end], 1000);
    assert_eq!(
        changes,
        vec![Change::Unban {
            cidr: cidr("10.250.0.1")
        }]
    );

    // Restarted after the bans ran out: nothing comes back, and the incident holds nothing.
    let mut late = mitigator(&[]);
    let (mut changes, mut out) = (Vec::new(), Vec::new());
    late.resume(
        saved,
        Duration::ZERO,
        wall + Duration::from_secs(3600),
        &|id| id == "i-open",
        &mut changes,
        &mut out,
    );
    assert!(late.in_force(Duration::ZERO).is_empty());
    assert!(changes.is_empty(), "{changes:?}");
}

#[test]
fn every_measure_has_a_listed_action() {
    let measures = [
        Measure::BlockReflector(53),
        Measure::LimitUdpPort(1),
        Measure::LimitTcpPort(1),
        Measure::LimitProto(IPPROTO_ICMP),
        Measure::LimitProto(IPPROTO_ICMPV6),
        Measure::LimitFragments(NFPROTO_IPV4),
        Measure::LimitFragments(NFPROTO_IPV6),
        Measure::MeterNewConnections(80),
        Measure::LimitConnections(80),
        Measure::LimitProto(47),
        Measure::BlockSynAcks(NFPROTO_IPV4),
        Measure::BlockOddFlags(NFPROTO_IPV6),
        Measure::LimitClosedPorts(IPPROTO_UDP),
        Measure::SynProxy(80),
    ];
    for measure in measures {
        let (action, ..) = describe(measure, 1, 1, 1, 1);
        assert!(Action::ALL.contains(&action), "{action}");
    }
}

/// The measures of each start, as (measure or "ban <addr>") names.
fn measures_of(event: Event) -> Vec<String> {
    let mut m = mitigator(&["10.250.9.0/24"]);
    let (changes, _) = tick(&mut m, &[event], 0);
    changes
        .iter()
        .map(|c| match c {
            Change::Enable { measure, .. } => format!("{measure:?}"),
            Change::Ban { cidr, .. } => format!("ban {cidr}"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Issue 14: each new vector has its measure; the safelist still comes first.
#[test]
fn issue14_new_vectors_get_their_measures() {
    let heavy = [("10.250.0.1", 0.9)];
    let safe = [("10.250.9.9", 0.9)];
    let start = |vector, counter, sources: &[(&str, f64)], concentrated| {
        let mut e = attack(
            vector,
            counter,
            EventKind::AttackStart,
            "i-1",
            sources,
            concentrated,
        );
        e.proto = vector.proto();
        e.port = None;
        e
    };
    // Reflectors are innocent: their SYN-ACKs are dropped, they are not banned.
    assert_eq!(
        measures_of(start(Vector::SynackReflection, "tcp_synack", &heavy, true)),
        ["BlockSynAcks(2)", "BlockSynAcks(10)"]
    );
    assert_eq!(
        measures_of(start(Vector::TcpFlagFlood, "tcp_odd", &heavy, true)),
        ["BlockOddFlags(2)", "BlockOddFlags(10)", "ban 10.250.0.1"]
    );
    assert_eq!(
        measures_of(start(Vector::TcpFlagFlood, "tcp_odd", &safe, true)),
        ["BlockOddFlags(2)", "BlockOddFlags(10)"]
    );
    let mut gre = start(Vector::IpProtoFlood, "l4_other", &heavy, true);
    gre.ip_proto = Some(47);
    assert_eq!(measures_of(gre.clone()), ["ban 10.250.0.1"]);
    gre.concentrated = false;
    gre.sources.clear();
    assert_eq!(measures_of(gre.clone()), ["LimitProto(47)"]);
    // A safelisted heavy source: the protocol is held to a rate instead.
    gre.sources = vec![SourceShare {
        addr: "10.250.9.9".parse().unwrap(),
        share: 0.9,
    }];
    gre.concentrated = true;
    assert_eq!(measures_of(gre), ["LimitProto(47)"]);
    let mut m = mitigator(&[]);
    let mut e = start(Vector::IpProtoFlood, "l4_other", &[], false);
    e.ip_proto = Some(47);
    let (_, out) = tick(&mut m, &[e], 0);
    assert_eq!(
        (out[0].action, out[0].proto, out[0].rate_pps),
        (Action::LimitProto, Some("gre"), Some(500))
    );
}

/// Issue 15: a distributed flood to random ports (no single port) gets its transport's
/// closed ports held to `closed_port_limit_pps`, lifted at its end; a flood to one port keeps
/// its port limit, a concentrated one its bans.
#[test]
fn issue15_random_port_floods_limit_closed_ports() {
    let many: Vec<(String, f64)> = (0..50).map(|i| (format!("10.250.2.{i}"), 0.02)).collect();
    let many: Vec<(&str, f64)> = many.iter().map(|(a, s)| (a.as_str(), *s)).collect();
    let flood = |vector: Vector, counter, kind, port: Option<u16>, concentrated| {
        let mut e = attack(vector, counter, kind, "i-rand", &many, concentrated);
        e.proto = vector.proto();
        e.port = port;
        e
    };
    let mut m = mitigator(&[]);
    let start = flood(
        Vector::UdpFlood,
        "other",
        EventKind::AttackStart,
        None,
        false,
    );
    let (changes, out) = tick(&mut m, &[start], 0);
    assert_eq!(
        changes,
        [Change::Enable {
            measure: Measure::LimitClosedPorts(IPPROTO_UDP),
            timeout: Duration::from_secs(120),
        }]
    );
    assert_eq!(
        (out[0].action, out[0].port, out[0].proto, out[0].rate_pps),
        (Action::LimitClosedPorts, None, Some("udp"), Some(100))
    );
    let status = m.measures();
    assert_eq!(status[0].action, Action::LimitClosedPorts);
    let end = flood(Vector::UdpFlood, "other", EventKind::AttackEnd, None, false);
    let (changes, out) = tick(&mut m, &[end], 1000);
    assert_eq!(
        changes,
        [Change::Disable {
            measure: Measure::LimitClosedPorts(IPPROTO_UDP)
        }]
    );
    assert_eq!(
        (out[0].name(), out[0].action),
        ("mitigation_removed", Action::LimitClosedPorts)
    );

    let start = |vector, counter, port, concentrated| {
        measures_of(flood(
            vector,
            counter,
            EventKind::AttackStart,
            port,
            concentrated,
        ))
    };
    assert_eq!(
        start(Vector::UdpFlood, "udp_27015", Some(27015), false),
        ["LimitUdpPort(27015)"]
    );
    assert_eq!(
        start(Vector::AckFlood, "other", None, false),
        ["LimitClosedPorts(6)"]
    );
    assert_eq!(
        start(Vector::SynFlood, "tcp_syn", None, false),
        ["LimitClosedPorts(6)", "SynCookies { on: true }"]
    );
    assert_eq!(
        start(Vector::SynFlood, "tcp_syn", Some(80), false),
        ["SynProxy(80)"]
    );
    // A service's port range: not closed ports (its limit is the port limit's business).
    let mut range = flood(
        Vector::UdpFlood,
        "udp_8000-8100",
        EventKind::AttackStart,
        None,
        false,
    );
    range.port_range = Some((8000, 8100));
    assert!(measures_of(range).is_empty());
    // Few heavy sources: banned, no port-wide measure.
    let mut few = flood(
        Vector::UdpFlood,
        "other",
        EventKind::AttackStart,
        None,
        true,
    );
    few.sources.truncate(1);
    few.sources[0].share = 0.9;
    assert_eq!(measures_of(few), ["ban 10.250.2.0"]);
}

/// The closed-port limit takes its rate from the configuration; 0 reports a drop.
#[test]
fn issue15_closed_port_rate_comes_from_the_config() {
    let mut config = Config::default();
    config.mitigation.closed_port_limit_pps = 0;
    let mut m = Mitigator::new(&config, Vec::new());
    let mut e = attack(
        Vector::UdpFlood,
        "l4_udp",
        EventKind::AttackStart,
        "i-1",
        &[],
        false,
    );
    e.port = None;
    let (_, out) = tick(&mut m, &[e], 0);
    assert_eq!(out[0].rate_pps, Some(0));
}

/// Issue 15: an operator's lift takes a port limit out at once and keeps it out on updates;
/// the end of the incident has nothing left to lift.
#[test]
fn issue15_a_lifted_port_limit_stays_out_for_the_rest_of_the_incident() {
    let mut m = mitigator(&[]);
    let update = |kind| event(kind, "i-1", &[], false);
    tick(&mut m, &[update(EventKind::AttackStart)], 0);
    let mut changes = Vec::new();
    let lift = Lift::parse(Some("limit_port")).unwrap();
    assert_eq!(m.lift("i-1", lift, &mut changes), Ok(1));
    assert_eq!(
        changes,
        vec![Change::Disable {
            measure: Measure::LimitUdpPort(27015)
        }]
    );
    let notices: Vec<Standdown> = m.drain_notices().collect();
    assert_eq!(
        (notices[0].name(), notices[0].action, notices[0].port),
        ("mitigation_lifted", Action::LimitPort, Some(27015))
    );
    assert!(m.in_force(Duration::from_millis(500)).is_empty());
    let (changes, out) = tick(&mut m, &[update(EventKind::AttackUpdate)], 1000);
    assert!(changes.is_empty() && out.is_empty(), "{changes:?} {out:?}");
    let (changes, _) = tick(&mut m, &[update(EventKind::AttackEnd)], 9000);
    assert!(changes.is_empty(), "{changes:?}");
    // A new incident on the same port is limited again.
    let (changes, _) = tick(
        &mut m,
        &[event(EventKind::AttackStart, "i-2", &[], false)],
        10_000,
    );
    assert_eq!(changes.len(), 1);
}

#[test]
fn issue15_a_lifted_ban_is_not_put_back_and_others_stay() {
    let mut m = mitigator(&[]);
    let heavy = [("10.250.0.1", 0.5), ("10.250.0.2", 0.4)];
    let update = |kind| event(kind, "i-1", &heavy, true);
    let (changes, _) = tick(&mut m, &[update(EventKind::AttackStart)], 0);
    assert_eq!(changes.len(), 2);
    let mut changes = Vec::new();
    let lift = Lift::parse(Some("10.250.0.1")).unwrap();
    assert_eq!(m.lift("i-1", lift, &mut changes), Ok(1));
    assert_eq!(
        changes,
        vec![Change::Unban {
            cidr: cidr("10.250.0.1")
        }]
    );
    let (changes, out) = tick(&mut m, &[update(EventKind::AttackUpdate)], 1000);
    assert_eq!(
        changes,
        vec![Change::Ban {
            cidr: cidr("10.250.0.2"),
            timeout: Duration::from_secs(600)
        }],
        "only the other one, refreshed"
    );
    assert!(out.is_empty(), "{out:?}");
    assert!(m
        .lift("i-9", Lift::All, &mut Vec::new())
        .unwrap_err()
        .contains("no incident i-9"));
}

#[test]
fn issue15_never_limited_ports_get_no_port_measure_and_say_so_once() {
    let config = Config::from_toml(
        "[mitigation]\nnever_limit_ports = [27015]\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let mut m = Mitigator::new(&config, Vec::new());
    let (changes, out) = tick(
        &mut m,
        &[event(EventKind::AttackStart, "i-1", &[], false)],
        0,
    );
    assert!(changes.is_empty() && out.is_empty(), "{changes:?}");
    let notices: Vec<Standdown> = m.drain_notices().collect();
    assert_eq!(notices.len(), 1);
    assert_eq!(
        (notices[0].name(), notices[0].by, notices[0].port),
        (
            "mitigation_skipped",
            StoodDownBy::NeverLimitPorts,
            Some(27015)
        )
    );
    tick(
        &mut m,
        &[event(EventKind::AttackUpdate, "i-1", &[], false)],
        1000,
    );
    assert_eq!(m.drain_notices().count(), 0, "once per incident");
}

#[test]
fn lifts_name_an_action_or_an_address() {
    assert_eq!(Lift::parse(None), Ok(Lift::All));
    assert_eq!(
        Lift::parse(Some("synproxy")),
        Ok(Lift::Action(Action::Synproxy))
    );
    assert_eq!(
        Lift::parse(Some("10.250.1.0/24")),
        Ok(Lift::Ban(cidr("10.250.1.0/24")))
    );
    assert!(Lift::parse(Some("limit"))
        .unwrap_err()
        .contains("limit_port"));
}

#[test]
fn issue15_a_lift_outlives_a_restart() {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut before = mitigator(&[]);
    let update = |kind| event(kind, "i-1", &[], false);
    tick(&mut before, &[update(EventKind::AttackStart)], 0);
    before
        .lift("i-1", Lift::Action(Action::LimitPort), &mut Vec::new())
        .unwrap();
    let saved = before.save(Duration::from_secs(1), wall);
    assert_eq!(saved[0].lifted, ["limit_port"]);
    let mut after = mitigator(&[]);
    let (mut changes, mut out) = (Vec::new(), Vec::new());
    after.resume(
        saved,
        Duration::ZERO,
        wall,
        &|_| true,
        &mut changes,
        &mut out,
    );
    let (changes, out) = tick(&mut after, &[update(EventKind::AttackUpdate)], 1000);
    assert!(changes.is_empty() && out.is_empty(), "{changes:?}");
}

#[test]
fn issue15_a_syn_proxy_stood_down_leaves_syn_cookies() {
    let syn = |kind| {
        let mut e = attack(Vector::SynFlood, "tcp_80", kind, "i-1", &[], false);
        e.port = Some(80);
        e
    };
    let mut m = mitigator(&[]);
    tick(&mut m, &[syn(EventKind::AttackStart)], 0);
    let mut changes = Vec::new();
    m.lift("i-1", Lift::Action(Action::Synproxy), &mut changes)
        .unwrap();
    assert_eq!(
        changes,
        vec![Change::Disable {
            measure: Measure::SynProxy(80)
        }]
    );
    let (changes, _) = tick(&mut m, &[syn(EventKind::AttackUpdate)], 1000);
    assert_eq!(changes, vec![Change::SynCookies { on: true }]);

    let config = Config::from_toml(
        "[mitigation]\nnever_limit_ports = [80]\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let mut m = Mitigator::new(&config, Vec::new());
    let (changes, _) = tick(&mut m, &[syn(EventKind::AttackStart)], 0);
    assert_eq!(changes, vec![Change::SynCookies { on: true }]);
}

/// Issue 15: four addresses of a /24 spoofed for one tick ban those four, never the /24 —
/// not in the same report, not in the next ones (they send no more), not when one tick's
/// samples fall in two reports; the same hosts sending on for more than `PREFIX_CONFIRM`
/// ban it.
#[test]
fn issue15_a_prefix_is_banned_only_once_it_stays_crowded() {
    let other = [("10.250.0.1", 0.9)];
    let mut m = mitigator(&[]);
    let (changes, _) = tick(
        &mut m,
        &[event(EventKind::AttackStart, "i-1", &CROWD, true)],
        0,
    );
    assert_eq!(changes.len(), 4, "{changes:?}");
    for at in [100, 1000, 2000, 3000] {
        let (changes, _) = tick(
            &mut m,
            &[event(EventKind::AttackUpdate, "i-1", &other, true)],
            at,
        );
        assert!(
            !banned(&changes, "10.250.1.0/24"),
            "at {at} ms: {changes:?}"
        );
    }
    // Named by two reports (one tick across a report's edge), then quiet.
    let mut m = mitigator(&[]);
    let ticks = reports(&mut m, &CROWD, &[0, 1000]);
    for at in [2000, 3000] {
        let (changes, _) = tick(
            &mut m,
            &[event(EventKind::AttackUpdate, "i-1", &other, true)],
            at,
        );
        assert!(
            !banned(&changes, "10.250.1.0/24"),
            "at {at} ms: {changes:?}"
        );
    }
    assert!(ticks.iter().all(|t| !banned(t, "10.250.1.0/24")));
    // Two reports in quick succession (a fast tick) are not longer than one.
    let mut m = mitigator(&[]);
    let ticks = reports(&mut m, &CROWD, &[0, 100, 200, 1000]);
    assert!(
        ticks.iter().all(|t| !banned(t, "10.250.1.0/24")),
        "{ticks:?}"
    );
    // Sending on: crowded at 0, 1 s, 2 s — banned at the report 1.5 s or more after the first.
    let mut m = mitigator(&[]);
    let ticks = reports(&mut m, &CROWD, &[0, 1000, 1400, 2000]);
    assert!(ticks[..3].iter().all(|t| !banned(t, "10.250.1.0/24")));
    assert!(banned(&ticks[3], "10.250.1.0/24"), "{ticks:?}");
    // A quiet report in between starts the wait afresh.
    let mut m = mitigator(&[]);
    reports(&mut m, &CROWD, &[0]);
    let quiet = event(EventKind::AttackUpdate, "i-1", &other, true);
    tick(&mut m, &[quiet], 1000);
    let mut crowd = |at| {
        let e = event(EventKind::AttackUpdate, "i-1", &CROWD, true);
        tick(&mut m, &[e], at).0
    };
    assert!(!banned(&crowd(2000), "10.250.1.0/24"));
    assert!(!banned(&crowd(3000), "10.250.1.0/24"));
    assert!(banned(&crowd(4000), "10.250.1.0/24"));
}

/// Issue 15: a prefix ban is a new ban like a host's: charged to `max_bans_per_second`.
#[test]
fn issue15_prefix_bans_are_charged_to_the_ban_budget() {
    let mut config = Config::default();
    config.mitigation.max_bans_per_second = 4;
    let mut m = Mitigator::new(&config, Vec::new());
    let elsewhere = |n: u32| -> Vec<(String, f64)> {
        (0..4)
            .map(|i| (format!("10.250.{}.1", 100 + n * 4 + i), 0.05))
            .collect()
    };
    let mut new_bans = Vec::new();
    let mut prefix_at = None;
    for (second, at) in [0u64, 1000, 2000, 3000].into_iter().enumerate() {
        // The crowd every second; four new hosts elsewhere in the two seconds after the first.
        let mut sources: Vec<(String, f64)> =
            CROWD.iter().map(|(a, s)| (a.to_string(), *s)).collect();
        if (1..=2).contains(&second) {
            sources.extend(elsewhere(second as u32));
        }
        let sources: Vec<(&str, f64)> = sources.iter().map(|(a, s)| (a.as_str(), *s)).collect();
        let kind = if second == 0 {
            EventKind::AttackStart
        } else {
            EventKind::AttackUpdate
        };
        let (_, out) = tick(&mut m, &[event(kind, "i-1", &sources, true)], at);
        let added: Vec<Cidr> = out.iter().flat_map(|e| e.addresses.clone()).collect();
        if added.contains(&cidr("10.250.1.0/24")) {
            prefix_at.get_or_insert(at);
        }
        new_bans.push(added.len());
    }
    assert!(new_bans.iter().all(|&n| n <= 4), "{new_bans:?}");
    // At 2 s the four new hosts took the budget: the prefix waits for the next second.
    assert_eq!(prefix_at, Some(3000), "{new_bans:?}");
}

/// Issue 15: a prefix ban lasts as long as its incident (refreshed with half its time left);
/// the bans of its hosts run out meanwhile and they leave the incident's state, and the
/// incident's end lifts the prefix alone.
#[test]
fn issue15_a_prefix_ban_is_refreshed_while_the_incident_lasts() {
    let mut m = mitigator(&[]);
    let ticks = reports(&mut m, &CROWD, &[0, 1000, 2000]);
    assert!(banned(&ticks[2], "10.250.1.0/24"));
    let mut refreshed_at = Vec::new();
    for second in 3..=1300u64 {
        let update = event(EventKind::AttackUpdate, "i-1", &CROWD, true);
        let (changes, out) = tick(&mut m, &[update], second * 1000);
        assert!(out.is_empty(), "no new ban at {second} s: {out:?}");
        if banned(&changes, "10.250.1.0/24") {
            refreshed_at.push(second);
        }
        assert!(
            !banned(&changes, "10.250.1.1"),
            "covered hosts are not refreshed"
        );
    }
    assert_eq!(
        refreshed_at,
        [303, 604, 905, 1206],
        "refreshed at half time"
    );
    let held: Vec<Item> = m
        .in_force(Duration::from_secs(1300))
        .iter()
        .map(|f| f.item)
        .collect();
    assert_eq!(
        held,
        [Item::Ban(cidr("10.250.1.0/24"))],
        "the hosts ran out"
    );
    let saved = m.save(Duration::from_secs(1300), SystemTime::now());
    assert_eq!(saved[0].bans.len(), 1, "{saved:?}");
    let end = event(EventKind::AttackEnd, "i-1", &[], true);
    let (changes, _) = tick(&mut m, &[end], 1_301_000);
    assert_eq!(
        changes,
        [Change::Unban {
            cidr: cidr("10.250.1.0/24")
        }]
    );
}

/// Issue 15: a host whose ban ran out leaves the incident: it no longer counts toward its
/// prefix, is not put back or saved, and is banned anew (an event, the budget) if it sends
/// again.
#[test]
fn issue15_hosts_whose_ban_ran_out_are_dropped() {
    let other = [("10.250.0.1", 0.9)];
    let mut m = mitigator(&[]);
    reports(&mut m, &CROWD[..3], &[0]);
    let revision = m.revision();
    for second in 1..=601u64 {
        let update = event(EventKind::AttackUpdate, "i-1", &other, true);
        tick(&mut m, &[update], second * 1000);
    }
    assert!(m.revision() > revision);
    let held: Vec<Item> = m
        .in_force(Duration::from_secs(601))
        .iter()
        .map(|f| f.item)
        .collect();
    assert_eq!(
        held,
        [Item::Ban(cidr("10.250.0.1"))],
        "only the one still sending"
    );
    // Three hosts of 10.250.1.0/24 ran out: a fourth does not make it crowded.
    let fourth = [("10.250.1.4", 0.5), ("10.250.0.1", 0.5)];
    for second in 602..=606u64 {
        let update = event(EventKind::AttackUpdate, "i-1", &fourth, true);
        let (changes, _) = tick(&mut m, &[update], second * 1000);
        assert!(!banned(&changes, "10.250.1.0/24"), "{changes:?}");
    }
    // One of them sends again: a new ban.
    let again = event(EventKind::AttackUpdate, "i-1", &[("10.250.1.1", 0.5)], true);
    let (changes, out) = tick(&mut m, &[again], 607_000);
    assert!(banned(&changes, "10.250.1.1"));
    assert_eq!(out[0].addresses, [cidr("10.250.1.1")]);
}

/// Issue 15: loopback, link-local, multicast, reserved and unspecified sources, and the
/// host's own addresses (in the safelist the daemon gives), are never banned; private
/// ranges are; a prefix ban never covers the host's address.
#[test]
fn issue15_reserved_and_own_addresses_are_never_banned() {
    let own = "192.168.7.10";
    let mut m = mitigator(&[own]);
    let sources = [
        ("127.0.0.1", 0.1),
        ("0.0.0.7", 0.1),
        ("169.254.1.1", 0.1),
        ("224.0.0.5", 0.1),
        ("255.255.255.255", 0.1),
        ("::1", 0.1),
        ("::", 0.1),
        ("fe80::1", 0.1),
        ("ff02::1", 0.1),
        (own, 0.1),
        ("10.1.2.3", 0.1),
        ("192.168.1.1", 0.1),
        ("fd00:250::7", 0.1),
    ];
    let (changes, _) = tick(
        &mut m,
        &[event(EventKind::AttackStart, "i-1", &sources, true)],
        0,
    );
    let mut bans: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Change::Ban { cidr, .. } => cidr.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    bans.sort();
    // The heavy sources that cannot be banned get the port limit beside the others' bans
    // (item 4: the safelist is not exempt from port-wide measures).
    assert_eq!(
        bans,
        [
            "10.1.2.3",
            "192.168.1.1",
            "Enable { measure: LimitUdpPort(27015), timeout: 120s }",
            "fd00:250::7"
        ]
    );
    // Only reserved sources: nothing to ban, the port is held to a rate instead.
    let mut m = mitigator(&[]);
    let (changes, _) = tick(
        &mut m,
        &[event(EventKind::AttackStart, "i-1", &sources[..9], true)],
        0,
    );
    assert_eq!(
        changes,
        [Change::Enable {
            measure: Measure::LimitUdpPort(27015),
            timeout: Duration::from_secs(120)
        }]
    );
    // Four neighbours of the host's own address: banned, their /24 never.
    let mut m = mitigator(&[own]);
    let neighbours = [
        ("192.168.7.1", 0.2),
        ("192.168.7.2", 0.2),
        ("192.168.7.3", 0.2),
        ("192.168.7.4", 0.2),
    ];
    let ticks = reports(&mut m, &neighbours, &[0, 1000, 2000, 3000]);
    assert_eq!(ticks[0].len(), 4);
    assert!(
        ticks.iter().all(|t| !banned(t, "192.168.7.0/24")),
        "{ticks:?}"
    );
    // A refreshed safelist (an administrator who logged in) applies from the next report.
    let mut m = mitigator(&[]);
    m.set_safelist(vec![cidr("10.250.0.1")]);
    let (changes, _) = tick(
        &mut m,
        &[event(
            EventKind::AttackStart,
            "i-1",
            &[("10.250.0.1", 0.6), ("10.250.0.2", 0.4)],
            true,
        )],
        0,
    );
    assert!(!banned(&changes, "10.250.0.1") && banned(&changes, "10.250.0.2"));
}

/// Issue 15: the saved state holds each incident's most recent `SAVED_HOSTS` hosts and every
/// prefix, and a restart resumes exactly those (once each); refreshes are no change to save,
/// new bans are.
#[test]
fn issue15_saved_state_is_bounded_and_changes_only_with_bans() {
    let mut config = Config::default();
    config.mitigation.max_bans_per_second = 10_000;
    let mut m = Mitigator::new(&config, Vec::new());
    let addrs: Vec<String> = (0..3000u32)
        .map(|i| format!("10.{}.{}.1", 100 + i / 250, i % 250))
        .collect();
    // 3000 hosts, 300 a second for ten seconds: the 1024 banned last are the ones kept (the
    // last three seconds' whole, 124 of the second before).
    for (second, chunk) in addrs.chunks(300).enumerate() {
        let sources: Vec<(&str, f64)> = chunk.iter().map(|a| (a.as_str(), 0.05)).collect();
        let kind = if second == 0 {
            EventKind::AttackStart
        } else {
            EventKind::AttackUpdate
        };
        tick(
            &mut m,
            &[event(kind, "i-1", &sources, true)],
            second as u64 * 1000,
        );
    }
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let saved = m.save(Duration::from_secs(10), wall);
    let kept: HashSet<String> = saved[0].bans.iter().map(|b| b.what.clone()).collect();
    assert_eq!(kept.len(), SAVED_HOSTS);
    assert!(addrs[2100..].iter().all(|a| kept.contains(a)));
    assert!(kept.iter().all(|a| addrs[1800..].contains(a)));
    let text = serde_json::to_string(&saved).unwrap();
    assert!(text.len() < 100_000, "{} bytes", text.len());

    // A refresh changes nothing to save; a new ban does.
    let revision = m.revision();
    let last: Vec<(&str, f64)> = addrs[2700..].iter().map(|a| (a.as_str(), 0.05)).collect();
    tick(
        &mut m,
        &[event(EventKind::AttackUpdate, "i-1", &last, true)],
        10_500,
    );
    assert_eq!(m.revision(), revision);
    tick(
        &mut m,
        &[event(
            EventKind::AttackUpdate,
            "i-1",
            &[("10.250.0.1", 0.5)],
            true,
        )],
        11_000,
    );
    assert_ne!(m.revision(), revision);

    // Resumed: the saved hosts come back in force, each once.
    let mut after = Mitigator::new(&config, Vec::new());
    let (mut changes, mut out) = (Vec::new(), Vec::new());
    after.resume(
        saved,
        Duration::ZERO,
        wall,
        &|_| true,
        &mut changes,
        &mut out,
    );
    let held = after.in_force(Duration::ZERO);
    assert_eq!(held.len(), SAVED_HOSTS);
    assert!(changes.is_empty() && out.is_empty());
}
