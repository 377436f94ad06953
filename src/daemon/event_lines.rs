//! Every event line the daemon prints on stdout (and posts to webhooks), one of each: `ts`
//! then `event` first, and each named in the README's event table.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use super::heal::{Cause, TableRestored};
use crate::addr::Cidr;
use crate::config::Config;
use crate::detect::{Event, EventKind, PrefixShare, SourceShare, Vector};
use crate::escalate::{Action as FlowAction, BgpEvent, FlowRule, Route};
use crate::mitigate::{Action, MitigationEvent, Standdown, StoodDownBy};
use crate::sense::{trace, Sensor};

const README: &str = include_str!("../../README.md");

fn host(last: u8) -> Cidr {
    Cidr::host(IpAddr::V4(Ipv4Addr::new(10, 250, 0, last)))
}

fn attack(kind: EventKind) -> Event {
    let end = kind == EventKind::AttackEnd;
    Event {
        kind,
        incident: "1-1".into(),
        vector: Vector::UdpFlood,
        proto: Some("udp"),
        ip_proto: None,
        port: Some(27015),
        port_range: None,
        counter: "svc_udp_27015".into(),
        pps: 81234.5,
        bps: 4874070.0,
        baseline_pps: 42.1,
        threshold_pps: 5000.0,
        warmed_up: true,
        sources: vec![SourceShare {
            addr: host(1).addr(),
            share: 0.981,
        }],
        distinct_sources: 2.0,
        concentrated: true,
        top_prefixes: Vec::new(),
        targets: vec![PrefixShare {
            prefix: host(2),
            share: 1.0,
        }],
        connections: None,
        connection_limit: None,
        duration: end.then_some(Duration::from_secs(12)),
        peak_pps: end.then_some(90_000.0),
        pcap: Some("/var/lib/ftagent/pcap/1-1.pcap".into()),
    }
}

fn mitigation(applied: bool) -> MitigationEvent {
    MitigationEvent {
        applied,
        incident: "1-1".into(),
        vector: "udp_flood",
        action: Action::Ban,
        addresses: vec![host(1)],
        port: None,
        proto: None,
        rate_pps: None,
        timeout: applied.then_some(Duration::from_secs(600)),
        monitor: false,
    }
}

fn standdown(by: StoodDownBy) -> Standdown {
    Standdown {
        incident: "1-1".into(),
        vector: "udp_flood",
        action: Action::LimitPort,
        addresses: Vec::new(),
        port: Some(27015),
        proto: Some("udp"),
        by,
        monitor: false,
    }
}

fn bgp(announced: bool, route: Route) -> BgpEvent {
    BgpEvent {
        announced,
        route,
        incident: Some("1-1".into()),
        vector: Some("udp_flood"),
        reason: "over 1 Gbit/s".into(),
        monitor: true,
    }
}

/// One line of every event, with the name it must carry.
fn every_event_line() -> Vec<(&'static str, String)> {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_083_092_123);
    let mut sensor = Sensor::new(&Config::default());
    let t0 = Instant::now();
    assert!(trace::window_line(&mut sensor, t0, 0).is_none());
    let sample = trace::window_line(&mut sensor, t0 + Duration::from_secs(1), 0).unwrap();
    let flowspec = Route::FlowSpec(FlowRule {
        destination: host(2),
        source: Some(host(1)),
        proto: Some(crate::proto::IPPROTO_UDP),
        dst_ports: Some((27015, 27015)),
        src_ports: None,
        fragments: false,
        action: FlowAction::RateLimit(1_250_000),
    });
    let restored = TableRestored {
        cause: Cause::TableDeleted,
        by: None,
        kept: 0,
        put_back: 2,
        took: Duration::from_millis(1),
        restores: 3,
    };
    vec![
        ("sample", sample),
        ("attack_start", attack(EventKind::AttackStart).to_json(wall)),
        (
            "attack_update",
            attack(EventKind::AttackUpdate).to_json(wall),
        ),
        ("attack_end", attack(EventKind::AttackEnd).to_json(wall)),
        ("mitigation_applied", mitigation(true).to_json(wall)),
        ("mitigation_removed", mitigation(false).to_json(wall)),
        (
            "mitigation_lifted",
            standdown(StoodDownBy::Operator).to_json(wall),
        ),
        (
            "mitigation_skipped",
            standdown(StoodDownBy::NeverLimitPorts).to_json(wall),
        ),
        ("bgp_announced", bgp(true, flowspec).to_json(wall)),
        (
            "bgp_withdrawn",
            bgp(false, Route::Blackhole(host(2))).to_json(wall),
        ),
        ("table_restored", restored.to_json(wall)),
    ]
}

#[test]
fn every_event_line_opens_with_ts_then_event() {
    for (name, line) in every_event_line() {
        let rest = line
            .strip_prefix(r#"{"ts":""#)
            .unwrap_or_else(|| panic!("{name}: `ts` is not the first key: {line}"));
        let (ts, rest) = rest.split_once(r#"",""#).unwrap();
        assert!(ts.ends_with('Z'), "{name}: {ts}");
        let expected = format!(r#"event":"{name}","#);
        assert!(
            rest.starts_with(&expected),
            "{name}: `event` is not the second key: {line}"
        );
        let _: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
    }
}

#[test]
fn the_readme_names_every_action() {
    for action in Action::ALL {
        assert!(
            README.contains(&format!("`{action}`")),
            "README: no {action}"
        );
    }
}

#[test]
fn the_readme_names_every_event_and_its_keys() {
    for (name, line) in every_event_line() {
        assert!(README.contains(&format!("`{name}`")), "README: no {name}");
        let serde_json::Value::Object(keys) = serde_json::from_str(&line).unwrap() else {
            panic!("{name}: not an object");
        };
        for key in keys.keys() {
            assert!(
                README.contains(&format!("`{key}`")),
                "README: {name}'s key `{key}` is not described"
            );
        }
    }
}
