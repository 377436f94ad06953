//! The reply to a status request: the daemon's state gathered on request (this may allocate;
//! the tick does not) from memory only — the caller lists the sets itself — with every list
//! capped so the reply stays small whatever the number of bans.

use std::time::{Instant, SystemTime};

use super::Daemon;
use crate::mitigate::Target;
use crate::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6};
use crate::ruleset::expr::{l4proto_name, NFPROTO_IPV6};
use crate::ruleset::{ElementKey, Key, Measure, SetRole};
use crate::status::{
    key_text, IncidentStatus, KeyRate, Mitigation, OperatorBan, Samples, Status, MAX_LISTED,
};
use crate::time::rfc3339;

impl Daemon {
    pub(super) fn status(&mut self, now: Instant) -> Status {
        let uptime = now.saturating_duration_since(self.schedule.started);
        let started_wall = SystemTime::now() - uptime;
        let mut mitigations: Vec<Mitigation> = self
            .pipeline
            .mitigator
            .measures()
            .into_iter()
            .map(|m| {
                let (target, element) = match m.target {
                    Target::Ban(cidr) => (
                        cidr.to_string(),
                        Some((
                            SetRole::for_ban(&cidr).name(),
                            Key::Addr(ElementKey::Cidr(cidr)),
                        )),
                    ),
                    Target::Measure(measure) => (
                        measure_target(measure),
                        Some((measure.set(), measure.key())),
                    ),
                    Target::SynCookies => ("net.ipv4.tcp_syncookies".to_string(), None),
                };
                Mitigation {
                    incident: m.incident,
                    vector: m.vector.to_string(),
                    action: m.action.to_string(),
                    target,
                    set: element.map(|(set, _)| set.to_string()),
                    element: element.map(|(_, key)| key_text(&key)),
                    remaining_s: None,
                }
            })
            .collect();
        let mitigations_more = mitigations.len().saturating_sub(MAX_LISTED);
        mitigations.truncate(MAX_LISTED);
        let mut operator_bans: Vec<OperatorBan> = self
            .pipeline
            .operator_bans
            .in_force(now)
            .into_iter()
            .map(|(cidr, _, left)| OperatorBan {
                cidr: cidr.to_string(),
                remaining_s: left.as_secs_f64(),
            })
            .collect();
        let operator_bans_more = operator_bans.len().saturating_sub(MAX_LISTED);
        operator_bans.truncate(MAX_LISTED);
        let (learned_s, warmup_s) = self.pipeline.detector.learning();
        let loss = self.pipeline.sensor.loss;
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_s: uptime.as_secs(),
            kernel_mode: if self.kernel.features.owner_persist {
                "owner+persist"
            } else {
                "unowned"
            }
            .to_string(),
            timeout_refresh: self.kernel.features.timeout_refresh,
            mode: self.config.mitigation.mode.to_string(),
            config: self.config_source.as_ref().map(|p| p.display().to_string()),
            reload: self.last_reload.clone(),
            warmed_up: self.pipeline.detector.warmed_up(),
            learned_s,
            warmup_s,
            samples: Samples {
                received: loss.received,
                lost: loss.lost,
                enobufs: loss.enobufs,
                malformed: loss.malformed,
            },
            conntrack_entries: self.pipeline.sensor.conntrack_entries,
            tick_lateness: self.schedule.lateness.summary(),
            keys: self
                .pipeline
                .detector
                .keys()
                .map(|k| KeyRate {
                    name: k.name.to_string(),
                    pps: k.pps,
                    baseline_pps: k.baseline_pps,
                    threshold_pps: k.threshold_pps,
                    over: k.over,
                })
                .collect(),
            incidents: self
                .pipeline
                .detector
                .open_incidents()
                .map(|i| IncidentStatus {
                    id: i.id.clone(),
                    vector: i.vector.name().to_string(),
                    counter: i.counter.clone(),
                    proto: i.proto.map(str::to_string),
                    port: i.port,
                    since: rfc3339(shifted(started_wall, i.started_s())),
                    duration_s: i.duration_s(),
                    pps: i.pps,
                    peak_pps: i.peak_pps,
                    baseline_pps: i.baseline_pps,
                    threshold_pps: i.threshold_pps,
                    concentrated: i.concentrated,
                    distinct_sources: i.distinct_sources,
                    sources: i
                        .sources()
                        .iter()
                        .map(|(a, share)| (a.to_string(), *share))
                        .collect(),
                    targets: i
                        .targets()
                        .iter()
                        .map(|(a, share)| (a.to_string(), *share))
                        .collect(),
                })
                .collect(),
            mitigations,
            mitigations_more,
            operator_bans,
            operator_bans_more,
            sets: Vec::new(),
            sets_error: None,
        }
    }
}

/// `t0` moved by `seconds` (negative for an incident older than this process).
fn shifted(t0: SystemTime, seconds: f64) -> SystemTime {
    let by = std::time::Duration::from_secs_f64(seconds.abs().min(1e9));
    if seconds >= 0.0 {
        t0 + by
    } else {
        t0.checked_sub(by).unwrap_or(t0)
    }
}

/// What an aggregate measure acts on, as `status` shows it.
fn measure_target(measure: Measure) -> String {
    match measure {
        Measure::BlockReflector(p) | Measure::LimitUdpPort(p) => format!("udp/{p}"),
        Measure::LimitTcpPort(p)
        | Measure::MeterNewConnections(p)
        | Measure::LimitConnections(p)
        | Measure::SynProxy(p) => {
            format!("tcp/{p}")
        }
        Measure::LimitProto(IPPROTO_ICMPV6) => "icmpv6".to_string(),
        Measure::LimitProto(IPPROTO_ICMP) => "icmp".to_string(),
        Measure::LimitProto(p) => format!("ip proto {}", l4proto_name(p)),
        Measure::LimitFragments(NFPROTO_IPV6) => "ipv6 fragments".to_string(),
        Measure::LimitFragments(_) => "ipv4 fragments".to_string(),
        Measure::BlockSynAcks(NFPROTO_IPV6) => "ipv6 syn-acks".to_string(),
        Measure::BlockSynAcks(_) => "ipv4 syn-acks".to_string(),
        Measure::BlockOddFlags(NFPROTO_IPV6) => "ipv6 odd tcp flags".to_string(),
        Measure::BlockOddFlags(_) => "ipv4 odd tcp flags".to_string(),
        Measure::LimitClosedPorts(p) => format!("{} closed ports", l4proto_name(p)),
    }
}
