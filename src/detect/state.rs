//! What survives a restart: the baselines (by counter name, so a changed layout keeps what
//! still applies), the learned time (a restored agent needs no second warm-up) and the open
//! incidents (a restart mid-attack neither re-announces nor re-learns the attack).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::baseline::{Baseline, BaselineState};
use super::classify::{Target, Vector};
use super::incident::Incident;
use super::Detector;
use crate::addr::Cidr;

/// The format version written by this build.
pub(crate) const VERSION: u32 = 1;

/// The persistable part of a [`Detector`] (serde; JSON in the state directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) version: u32,
    /// Seconds of traffic learned.
    pub(crate) learned_s: f64,
    /// The next incident number.
    pub(crate) next_seq: u64,
    pub(crate) baselines: BTreeMap<String, BaselineState>,
    pub(crate) incidents: Vec<IncidentState>,
}

/// An open incident as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IncidentState {
    pub(crate) id: String,
    pub(crate) seq: u64,
    pub(crate) vector: Vector,
    pub(crate) proto: Option<String>,
    /// ip_proto_flood: the IP protocol number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ip_proto: Option<u8>,
    /// The target: one port, a port range (a service), or none.
    pub(crate) port_first: Option<u16>,
    pub(crate) port_last: Option<u16>,
    /// Counter (and connection key) names.
    pub(crate) drivers: Vec<String>,
    pub(crate) involved: Vec<String>,
    pub(crate) counter: String,
    /// Seconds since its first tick over threshold, at the last tick before saving.
    pub(crate) age_s: f64,
    /// Seconds since it was last in the attack, at the last tick before saving.
    pub(crate) quiet_s: f64,
    pub(crate) pps: f64,
    pub(crate) bps: f64,
    pub(crate) baseline_pps: f64,
    pub(crate) threshold_pps: f64,
    pub(crate) peak_pps: f64,
    pub(crate) connections: Option<u32>,
    pub(crate) concentrated: bool,
    pub(crate) distinct_sources: f64,
    /// False when it opened during the warm-up, over a ceiling (files without it: true).
    #[serde(default = "yes")]
    pub(crate) warmed_up: bool,
    pub(crate) sources: Vec<(IpAddr, f64)>,
    pub(crate) top_prefixes: Vec<(String, f64)>,
    /// Addresses or prefixes (absent in states saved before issue 14).
    #[serde(default)]
    pub(crate) targets: Vec<(String, f64)>,
}

impl State {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn from_json(text: &str) -> Result<State, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl Detector {
    /// Baselines and open incidents, for [`Detector::restore`] after a restart.
    pub(crate) fn save(&self) -> State {
        let now = self.last.unwrap_or(0.0);
        let baselines = self
            .keys
            .iter()
            .filter(|k| !matches!(k.role, super::Role::Connections(_)))
            .map(|k| (k.name.clone(), k.base.to_state()))
            .collect();
        let names = |keys: &[usize]| -> Vec<String> {
            keys.iter()
                .filter_map(|&k| self.keys.get(k))
                .map(|k| k.name.clone())
                .collect()
        };
        let incidents = self
            .incidents
            .iter()
            .map(|i| {
                let (port_first, port_last) = match (i.port, i.port_range) {
                    (_, Some((a, b))) => (Some(a), Some(b)),
                    (Some(p), None) => (Some(p), Some(p)),
                    (None, None) => (None, None),
                };
                IncidentState {
                    id: i.id.clone(),
                    seq: i.seq,
                    vector: i.vector,
                    proto: i.proto.map(str::to_string),
                    ip_proto: i.ip_proto,
                    port_first,
                    port_last,
                    drivers: names(&i.drivers),
                    involved: names(&i.involved),
                    counter: i.counter.clone(),
                    age_s: (now - i.started).max(0.0),
                    quiet_s: (now - i.last_active).max(0.0),
                    pps: i.pps,
                    bps: i.bps,
                    baseline_pps: i.baseline_pps,
                    threshold_pps: i.threshold_pps,
                    peak_pps: i.peak_pps,
                    connections: i.connections,
                    concentrated: i.concentrated,
                    distinct_sources: i.distinct_sources,
                    warmed_up: i.warmed_up,
                    sources: i.sources().to_vec(),
                    top_prefixes: printed(i.top_prefixes()),
                    targets: printed(i.targets()),
                }
            })
            .collect();
        State {
            version: VERSION,
            learned_s: self.learned,
            next_seq: self.next_seq,
            baselines,
            incidents,
        }
    }

    /// Takes over a saved state at `now` (this process's clock): baselines of counters that
    /// still exist, the learned time, and the open incidents — they stay open without a new
    /// attack_start, and their counters stay frozen. Replaces any incidents open before.
    pub(crate) fn restore(&mut self, state: State, now: Duration) {
        let t = now.as_secs_f64();
        for key in &mut self.keys {
            key.owner = None;
            key.streak = 0;
            key.frozen = false;
            if let Some(b) = state.baselines.get(&key.name) {
                key.base = Baseline::from_state(b);
            }
        }
        self.learned = if state.learned_s.is_finite() {
            state.learned_s.max(0.0)
        } else {
            0.0
        };
        self.next_seq = self.next_seq.max(state.next_seq);
        self.last = None;
        self.incidents.clear();
        for saved in state.incidents {
            let index = |name: &String| self.keys.iter().position(|k| &k.name == name);
            let drivers: Vec<usize> = saved
                .drivers
                .iter()
                .filter_map(index)
                .filter(|&k| self.keys[k].owner.is_none())
                .collect();
            if drivers.is_empty() {
                continue; // its counters are gone from the configuration
            }
            let mut involved: Vec<usize> = saved.involved.iter().filter_map(index).collect();
            involved.reserve(32);
            let target = self.saved_target(&saved);
            let mut incident = Incident::new(
                saved.id,
                saved.seq,
                saved.vector,
                target,
                saved
                    .port_first
                    .filter(|_| saved.port_first == saved.port_last),
                match (saved.port_first, saved.port_last) {
                    (Some(a), Some(b)) if a != b => Some((a, b)),
                    _ => None,
                },
                saved.counter,
                drivers,
                involved,
                t - finite(saved.age_s),
                t - finite(saved.quiet_s),
            );
            incident.ip_proto = saved.ip_proto;
            incident.proto = match saved.proto.as_deref() {
                Some("tcp") => Some("tcp"),
                Some("udp") => Some("udp"),
                Some("icmp") => Some("icmp"),
                Some("icmpv6") => Some("icmpv6"),
                _ => saved.vector.proto(),
            };
            incident.reported = true;
            incident.last_report = t;
            incident.pps = saved.pps;
            incident.bps = saved.bps;
            incident.baseline_pps = saved.baseline_pps;
            incident.threshold_pps = saved.threshold_pps;
            incident.peak_pps = saved.peak_pps;
            incident.connections = saved.connections;
            incident.distinct_sources = saved.distinct_sources;
            incident.warmed_up = saved.warmed_up;
            incident.set_sources(saved.sources.iter().copied(), saved.concentrated);
            incident.set_prefixes(parsed(&saved.top_prefixes));
            incident.set_targets(parsed(&saved.targets));
            for &d in &incident.drivers {
                self.keys[d].owner = Some(incident.seq);
            }
            self.next_seq = self.next_seq.max(incident.seq + 1);
            self.incidents.push(incident);
        }
        self.freeze();
    }

    fn saved_target(&self, saved: &IncidentState) -> Target {
        match (saved.port_first, saved.port_last) {
            (Some(first), Some(last)) => {
                let proto = match saved.vector.proto() {
                    Some("udp") => crate::config::Proto::Udp,
                    _ => crate::config::Proto::Tcp,
                };
                let service = self
                    .services
                    .iter()
                    .position(|s| s.proto == proto && s.first == first && s.last == last);
                match service {
                    Some(s) => Target::Service(s),
                    None if first == last => self.target_of(proto, Some(first)),
                    None => Target::Any,
                }
            }
            _ => Target::Any,
        }
    }
}

fn yes() -> bool {
    true
}

fn printed(blocks: &[(Cidr, f64)]) -> Vec<(String, f64)> {
    blocks.iter().map(|(c, s)| (c.to_string(), *s)).collect()
}

/// The blocks of `saved` that parse.
fn parsed(saved: &[(String, f64)]) -> impl Iterator<Item = (Cidr, f64)> + '_ {
    saved
        .iter()
        .filter_map(|(c, s)| c.parse().ok().map(|c| (c, *s)))
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        0.0
    }
}
