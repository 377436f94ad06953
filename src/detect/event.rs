//! Events: plain data about an incident at one moment, and their one-line JSON form (the
//! schema is in the README, section "Events").

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::classify::Vector;
use crate::addr::Cidr;
use crate::event::{self, EventBody};

/// The variants are the events' names (`attack_start`…), hence their common prefix.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    AttackStart,
    AttackUpdate,
    AttackEnd,
}

impl EventKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::AttackStart => "attack_start",
            EventKind::AttackUpdate => "attack_update",
            EventKind::AttackEnd => "attack_end",
        }
    }
}

/// A source and its share of the samples (or of the service's connections).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SourceShare {
    pub(crate) addr: IpAddr,
    pub(crate) share: f64,
}

/// A /24 (/64) prefix — or, as a target, any block, a single address included — and its share
/// of the incident's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PrefixShare {
    pub(crate) prefix: Cidr,
    pub(crate) share: f64,
}

/// One incident's start, update or end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) kind: EventKind,
    pub(crate) incident: String,
    pub(crate) vector: Vector,
    pub(crate) proto: Option<&'static str>,
    /// ip_proto_flood: the IP protocol number (47 for GRE…).
    pub(crate) ip_proto: Option<u8>,
    pub(crate) port: Option<u16>,
    /// The service's port range when the incident is on a range.
    pub(crate) port_range: Option<(u16, u16)>,
    /// The counter `pps`, `baseline_pps` and `threshold_pps` refer to.
    pub(crate) counter: String,
    pub(crate) pps: f64,
    pub(crate) bps: f64,
    pub(crate) baseline_pps: f64,
    pub(crate) threshold_pps: f64,
    /// False when the incident opened during the warm-up, over an absolute ceiling
    /// (`threshold_pps` is then the ceiling).
    pub(crate) warmed_up: bool,
    /// Top sources; empty when distributed.
    pub(crate) sources: Vec<SourceShare>,
    pub(crate) distinct_sources: f64,
    pub(crate) concentrated: bool,
    pub(crate) top_prefixes: Vec<PrefixShare>,
    /// The local addresses the incident's packets hit, heaviest first; a prefix when they
    /// spread over more addresses of a /24 (/64) than are listed.
    pub(crate) targets: Vec<PrefixShare>,
    /// Slowloris and connection floods by connection count: the most one source holds, and
    /// the limit.
    pub(crate) connections: Option<u32>,
    pub(crate) connection_limit: Option<u32>,
    /// attack_end only.
    pub(crate) duration: Option<Duration>,
    pub(crate) peak_pps: Option<f64>,
    /// The incident's packet capture file, when one is written (set by `report`).
    pub(crate) pcap: Option<String>,
}

impl Event {
    /// One JSON object on one line (no newline); `wall_clock` gives `ts`.
    pub(crate) fn to_json(&self, wall_clock: SystemTime) -> String {
        let line = Line {
            event: self.kind.name(),
            incident: &self.incident,
            vector: self.vector.name(),
            proto: self.proto,
            ip_proto: self.ip_proto,
            port: self.port,
            port_range: self.port_range.map(|(a, b)| format!("{a}-{b}")),
            counter: &self.counter,
            pps: round(self.pps, 1.0),
            bps: round(self.bps, 1.0),
            baseline_pps: round(self.baseline_pps, 10.0),
            threshold_pps: round(self.threshold_pps, 10.0),
            warmed_up: self.warmed_up,
            sources: self
                .sources
                .iter()
                .map(|s| Share {
                    addr: Some(s.addr.to_string()),
                    prefix: None,
                    share: round(s.share, 1000.0),
                })
                .collect(),
            distinct_sources: self.distinct_sources.round(),
            concentrated: self.concentrated,
            top_prefixes: self.top_prefixes.iter().map(Share::of).collect(),
            targets: self.targets.iter().map(Share::of).collect(),
            connections: self.connections,
            connection_limit: self.connection_limit,
            duration_s: self.duration.map(|d| round(d.as_secs_f64(), 1000.0)),
            peak_pps: self.peak_pps.map(|p| round(p, 1.0)),
            pcap: self.pcap.as_deref(),
        };
        event::line(&line, wall_clock)
    }
}

/// `x` rounded to 1/`per` (finite: JSON has no NaN).
fn round(x: f64, per: f64) -> f64 {
    if x.is_finite() {
        (x * per).round() / per
    } else {
        0.0
    }
}

/// The event's fields, in schema order.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(skip)]
    event: &'static str,
    incident: &'a str,
    vector: &'static str,
    proto: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_proto: Option<u8>,
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port_range: Option<String>,
    counter: &'a str,
    pps: f64,
    bps: f64,
    baseline_pps: f64,
    threshold_pps: f64,
    warmed_up: bool,
    sources: Vec<Share>,
    distinct_sources: f64,
    concentrated: bool,
    top_prefixes: Vec<Share>,
    targets: Vec<Share>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_pps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pcap: Option<&'a str>,
}

impl EventBody for Line<'_> {
    fn name(&self) -> &'static str {
        self.event
    }
}

#[derive(Serialize)]
struct Share {
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    share: f64,
}

impl Share {
    /// A block as `{"prefix": …}`, or `{"addr": …}` when it is a single address.
    fn of(p: &PrefixShare) -> Share {
        let text = Some(p.prefix.to_string());
        let host = p.prefix.is_host();
        Share {
            addr: if host { text.clone() } else { None },
            prefix: if host { None } else { text },
            share: round(p.share, 1000.0),
        }
    }
}
