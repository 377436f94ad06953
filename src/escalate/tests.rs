//! The planner on synthetic incidents: when it escalates, what it announces, the limit, the
//! withdrawal and its minimum duration, and the routes found at start.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::detect::{Event, EventKind, SourceShare, Vector};

const VICTIM: &str = "192.0.2.10";
const VICTIM6: &str = "2001:db8::10";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.agent.warmup = secs(5);
    c.detection.hold = secs(5);
    c.bgp.enabled = true;
    c.bgp.escalate_pps = 100_000;
    c.bgp.escalate_after = secs(60);
    c.bgp.min_duration = Duration::ZERO;
    edit(&mut c);
    c
}

/// A planner that found nothing in the daemon at start.
fn planner(c: &Config) -> Escalator {
    let mut e = Escalator::new(c, vec![ip(VICTIM), ip(VICTIM6), ip("127.0.0.1")]);
    e.adopt(&[], Duration::ZERO);
    e
}

fn udp_flood(kind: EventKind, id: &str, pps: f64) -> Event {
    Event {
        kind,
        incident: id.to_string(),
        vector: Vector::UdpFlood,
        proto: Some("udp"),
        ip_proto: None,
        port: Some(27015),
        port_range: None,
        counter: "svc_udp_27015".to_string(),
        pps,
        bps: pps * 800.0,
        baseline_pps: 10.0,
        threshold_pps: 5000.0,
        warmed_up: true,
        sources: Vec::new(),
        distinct_sources: 50_000.0,
        concentrated: false,
        top_prefixes: Vec::new(),
        targets: Vec::new(),
        connections: None,
        connection_limit: None,
        duration: None,
        peak_pps: None,
        pcap: None,
    }
}

/// A tick with this event, 1000 samples of which 900 to `dst`.
fn tick(e: &mut Escalator, event: Event, dst: &str, now: u64) -> Vec<BgpEvent> {
    let mut out = Vec::new();
    e.plan(
        &[event],
        &[(ip(dst), 900), (ip("198.51.100.1"), 100)],
        1000,
        secs(now),
        &mut out,
    );
    out
}

fn routes(e: &Escalator) -> Vec<String> {
    e.announcements()
        .iter()
        .map(|a| a.route.to_string())
        .collect()
}

#[test]
fn a_flood_over_the_level_gets_a_blackhole_and_a_flowspec_rule() {
    let c = config(|_| {});
    let mut e = planner(&c);
    let out = tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-1", 250_000.0),
        VICTIM,
        10,
    );
    assert_eq!(
        routes(&e),
        [
            "rtbh 192.0.2.10/32",
            "flowspec destination 192.0.2.10/32 protocol udp destination-port 27015 discard"
        ]
    );
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|o| o.announced && o.incident.as_deref() == Some("1-1")));
    let line: serde_json::Value =
        serde_json::from_str(&out[0].to_json(std::time::UNIX_EPOCH)).unwrap();
    assert_eq!(line["event"], "bgp_announced");
    assert_eq!(line["route"], "rtbh");
    assert_eq!(line["destination"], "192.0.2.10/32");
    assert_eq!(line["action"], "blackhole");
    assert_eq!(line["mode"], "mitigate");
    assert!(
        line["reason"].as_str().unwrap().contains("escalate_pps"),
        "{line}"
    );
    let rule: serde_json::Value =
        serde_json::from_str(&out[1].to_json(std::time::UNIX_EPOCH)).unwrap();
    assert_eq!(
        (&rule["proto"], &rule["port"], &rule["action"]),
        (&"udp".into(), &"27015".into(), &"discard".into())
    );
    // Updates of the same incident add nothing.
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackUpdate, "1-1", 260_000.0),
        VICTIM,
        11
    )
    .is_empty());
    assert_eq!(e.announcements().len(), 2);
}

#[test]
fn under_the_level_nothing_until_escalate_after_while_still_over_threshold() {
    let c = config(|_| {});
    let mut e = planner(&c);
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-1", 20_000.0),
        VICTIM,
        10
    )
    .is_empty());
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackUpdate, "1-1", 20_000.0),
        VICTIM,
        69
    )
    .is_empty());
    let out = tick(
        &mut e,
        udp_flood(EventKind::AttackUpdate, "1-1", 20_000.0),
        VICTIM,
        70,
    );
    assert_eq!(out.len(), 2);
    assert!(
        out[0].reason.contains("escalate_after"),
        "{}",
        out[0].reason
    );
    // An incident whose rate fell under its threshold by then is not escalated.
    let mut e = planner(&c);
    tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "2-1", 20_000.0),
        VICTIM,
        10,
    );
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackUpdate, "2-1", 4_000.0),
        VICTIM,
        80
    )
    .is_empty());
}

#[test]
fn bps_level_and_disabled_criteria() {
    let c = config(|c| {
        c.bgp.escalate_pps = 0;
        c.bgp.escalate_after = Duration::ZERO;
        c.bgp.escalate_bps = 1_000_000_000;
    });
    let mut e = planner(&c);
    // 250k pps is 200 Mbit/s here: under the bps level, and pps is no criterion.
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-1", 250_000.0),
        VICTIM,
        10
    )
    .is_empty());
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackUpdate, "1-1", 250_000.0),
        VICTIM,
        1000
    )
    .is_empty());
    let out = tick(
        &mut e,
        udp_flood(EventKind::AttackUpdate, "1-1", 1_500_000.0),
        VICTIM,
        1001,
    );
    assert!(out[0].reason.contains("escalate_bps"), "{}", out[0].reason);
}

#[test]
fn withdrawn_when_the_incident_ends_but_not_before_min_duration() {
    let c = config(|c| c.bgp.min_duration = secs(300));
    let mut e = planner(&c);
    tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-1", 250_000.0),
        VICTIM,
        10,
    );
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackEnd, "1-1", 0.0),
        VICTIM,
        40
    )
    .is_empty());
    assert_eq!(e.announcements().len(), 2, "held for min_duration");
    assert!(!e.due(secs(309)));
    assert!(e.due(secs(310)));
    let mut out = Vec::new();
    assert!(e.tick(secs(310), &mut out));
    assert!(e.announcements().is_empty());
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|o| !o.announced && o.incident.as_deref() == Some("1-1")));
    assert_eq!(out[0].reason, "the incident ended");
    assert!(!e.due(secs(400)));
}

#[test]
fn a_route_shared_by_two_incidents_goes_with_the_last() {
    let c = config(|_| {});
    let mut e = planner(&c);
    tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-1", 250_000.0),
        VICTIM,
        10,
    );
    let mut syn = udp_flood(EventKind::AttackStart, "1-2", 300_000.0);
    syn.vector = Vector::SynFlood;
    syn.proto = Some("tcp");
    syn.port = Some(80);
    let out = tick(&mut e, syn, VICTIM, 11);
    assert_eq!(
        out.len(),
        1,
        "the blackhole route is not announced twice: {out:?}"
    );
    assert_eq!(e.announcements().len(), 3);
    let out = tick(
        &mut e,
        udp_flood(EventKind::AttackEnd, "1-1", 0.0),
        VICTIM,
        20,
    );
    assert_eq!(out.len(), 1, "only the UDP rule goes: {out:?}");
    assert_eq!(routes(&e)[0], "rtbh 192.0.2.10/32");
}

#[test]
fn never_more_than_max_announcements() {
    let c = config(|c| c.bgp.max_announcements = 3);
    let mut e = planner(&c);
    tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-1", 250_000.0),
        VICTIM,
        10,
    );
    let mut other = udp_flood(EventKind::AttackStart, "1-2", 250_000.0);
    other.port = Some(53);
    tick(&mut e, other, VICTIM6, 11);
    assert_eq!(
        routes(&e),
        [
            "rtbh 192.0.2.10/32",
            "flowspec destination 192.0.2.10/32 protocol udp destination-port 27015 discard",
            "rtbh 2001:db8::10/128"
        ]
    );
}

#[test]
fn only_this_hosts_addresses_or_the_configured_destinations() {
    let c = config(|_| {});
    let mut e = planner(&c);
    // Most samples to an address that is not ours (forwarded traffic, say): nothing.
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-1", 250_000.0),
        "203.0.113.5",
        10
    )
    .is_empty());
    // Nor loopback, even if it is ours.
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-2", 250_000.0),
        "127.0.0.1",
        10
    )
    .is_empty());
    // No destination with half of the samples: nothing.
    let mut out = Vec::new();
    e.plan(
        &[udp_flood(EventKind::AttackStart, "1-3", 250_000.0)],
        &[(ip(VICTIM), 400), (ip(VICTIM6), 400)],
        1000,
        secs(10),
        &mut out,
    );
    assert!(out.is_empty());
    let c = config(|c| c.bgp.destinations = vec!["203.0.113.0/24".parse().unwrap()]);
    let mut e = planner(&c);
    assert_eq!(
        tick(
            &mut e,
            udp_flood(EventKind::AttackStart, "1-1", 250_000.0),
            "203.0.113.5",
            10
        )
        .len(),
        2
    );
    assert!(tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-2", 250_000.0),
        VICTIM,
        10
    )
    .is_empty());
}

#[test]
fn flowspec_rules_by_vector() {
    let c = config(|c| {
        c.bgp.rtbh = false;
        c.bgp.action = crate::config::FlowAction::RateLimit;
        c.bgp.rate_limit_bps = 8_000_000;
    });
    let rule = |event: Event, dst: &str| {
        let mut e = planner(&c);
        tick(&mut e, event, dst, 10);
        routes(&e)
    };
    let mut amp = udp_flood(EventKind::AttackStart, "1-1", 250_000.0);
    amp.vector = Vector::DnsAmplification;
    amp.counter = "amp_53".to_string();
    amp.port = None;
    assert_eq!(
        rule(amp, VICTIM),
        ["flowspec destination 192.0.2.10/32 protocol udp source-port 53 rate-limit 1000000 bytes/s"]
    );
    let mut icmp = udp_flood(EventKind::AttackStart, "1-1", 250_000.0);
    icmp.vector = Vector::IcmpFlood;
    icmp.proto = Some("icmpv6");
    icmp.port = None;
    assert_eq!(
        rule(icmp, VICTIM6),
        ["flowspec destination 2001:db8::10/128 protocol icmpv6 rate-limit 1000000 bytes/s"]
    );
    let mut fragments = udp_flood(EventKind::AttackStart, "1-1", 250_000.0);
    fragments.vector = Vector::FragmentFlood;
    fragments.proto = None;
    fragments.port = None;
    assert_eq!(
        rule(fragments, VICTIM),
        ["flowspec destination 192.0.2.10/32 fragment rate-limit 1000000 bytes/s"]
    );
    let mut range = udp_flood(EventKind::AttackStart, "1-1", 250_000.0);
    range.port = None;
    range.port_range = Some((8000, 8100));
    assert_eq!(
        rule(range, VICTIM),
        ["flowspec destination 192.0.2.10/32 protocol udp destination-port 8000-8100 rate-limit 1000000 bytes/s"]
    );
    // A concentrated flood: one rule per heavy source of the destination's family.
    let mut concentrated = udp_flood(EventKind::AttackStart, "1-1", 250_000.0);
    concentrated.concentrated = true;
    concentrated.sources = vec![
        SourceShare {
            addr: ip("198.51.100.7"),
            share: 0.6,
        },
        SourceShare {
            addr: ip("2001:db8:1::7"),
            share: 0.2,
        },
        SourceShare {
            addr: ip("198.51.100.8"),
            share: 0.1,
        },
        SourceShare {
            addr: ip("198.51.100.9"),
            share: 0.001,
        },
    ];
    assert_eq!(
        rule(concentrated, VICTIM),
        [
            "flowspec destination 192.0.2.10/32 source 198.51.100.7/32 protocol udp destination-port 27015 rate-limit 1000000 bytes/s",
            "flowspec destination 192.0.2.10/32 source 198.51.100.8/32 protocol udp destination-port 27015 rate-limit 1000000 bytes/s"
        ]
    );
    // Connection-level attacks stay local.
    let mut slowloris = udp_flood(EventKind::AttackStart, "1-1", 250_000.0);
    slowloris.vector = Vector::Slowloris;
    assert!(rule(slowloris, VICTIM).is_empty());
}

#[test]
fn routes_found_at_start_are_kept_when_claimed_and_withdrawn_after_the_grace_otherwise() {
    let c = config(|_| {});
    // grace: warmup 5 s + hold 5 s + 10 s.
    let mut e = Escalator::new(&c, vec![ip(VICTIM)]);
    assert!(!e.ready());
    let mut out = Vec::new();
    // Before the daemon's routes are known, nothing is announced.
    e.plan(
        &[udp_flood(EventKind::AttackStart, "9-1", 250_000.0)],
        &[(ip(VICTIM), 900)],
        1000,
        secs(1),
        &mut out,
    );
    assert!(out.is_empty());
    let blackhole = Route::Blackhole(Cidr::host(ip(VICTIM)));
    let stale = Route::Blackhole(Cidr::host(ip("192.0.2.99")));
    e.adopt(&[blackhole, stale], secs(2));
    assert!(e.ready());
    assert_eq!(e.announcements().len(), 2);
    // The ongoing attack claims the blackhole route: only the FlowSpec rule is new.
    let out = tick(
        &mut e,
        udp_flood(EventKind::AttackUpdate, "9-1", 250_000.0),
        VICTIM,
        8,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(out[0].route, Route::FlowSpec(_)));
    assert!(!e.due(secs(19)));
    let mut out = Vec::new();
    assert!(e.due(secs(20)));
    e.tick(secs(20), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].route, stale);
    assert_eq!(out[0].incident, None);
    assert!(out[0].reason.contains("found at start"));
    assert_eq!(e.announcements().len(), 2);
    assert!(e.announcements().iter().all(|a| a.incidents == ["9-1"]));
}

#[test]
fn monitor_mode_reports_and_needs_no_daemon() {
    let c = config(|c| c.mitigation.mode = crate::config::Mode::Monitor);
    let mut e = Escalator::new(&c, vec![ip(VICTIM)]);
    assert!(e.ready());
    let out = tick(
        &mut e,
        udp_flood(EventKind::AttackStart, "1-1", 250_000.0),
        VICTIM,
        1,
    );
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.monitor));
    let line: serde_json::Value =
        serde_json::from_str(&out[0].to_json(std::time::UNIX_EPOCH)).unwrap();
    assert_eq!(line["mode"], "monitor");
}

/// Issue 15: FlowSpec source rules never name a safelisted source, one of the host's own
/// addresses or one in a never-banned range (loopback, multicast…); with none left, the rule
/// covers the destination's port for every source.
#[test]
fn issue15_flowspec_sources_skip_the_safelist_and_never_banned_ranges() {
    let c = config(|c| c.bgp.rtbh = false);
    let mut flood = udp_flood(EventKind::AttackStart, "1-1", 250_000.0);
    flood.concentrated = true;
    let source = |addr: &str, share| SourceShare {
        addr: ip(addr),
        share,
    };
    flood.sources = vec![
        source("198.51.100.7", 0.3),
        source("203.0.113.1", 0.2),
        source("127.0.0.1", 0.1),
        source("224.0.0.5", 0.1),
        source(VICTIM, 0.1),
        source("198.51.100.8", 0.1),
    ];
    let mut e = planner(&c);
    e.set_safelist(vec!["203.0.113.0/24".parse().unwrap()]);
    tick(&mut e, flood.clone(), VICTIM, 10);
    assert_eq!(
        routes(&e),
        [
            "flowspec destination 192.0.2.10/32 source 198.51.100.7/32 protocol udp destination-port 27015 discard",
            "flowspec destination 192.0.2.10/32 source 198.51.100.8/32 protocol udp destination-port 27015 discard"
        ]
    );
    flood
        .sources
        .retain(|s| s.addr != ip("198.51.100.7") && s.addr != ip("198.51.100.8"));
    let mut e = planner(&c);
    e.set_safelist(vec!["203.0.113.0/24".parse().unwrap()]);
    tick(&mut e, flood, VICTIM, 10);
    assert_eq!(
        routes(&e),
        ["flowspec destination 192.0.2.10/32 protocol udp destination-port 27015 discard"]
    );
}
