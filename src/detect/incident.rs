//! Incidents: one per attack vector and target, opened after `consecutive_ticks` ticks over
//! threshold, reported at most once a second, ended after `hold` under the exit threshold
//! (hysteresis: a flood hovering around its threshold stays one incident).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::attribution::TARGETS;
use super::classify::{Target, Vector};
use super::event::{Event, EventKind, PrefixShare, SourceShare};
use super::{Detector, Role, Sample, REPORT_INTERVAL, TOP};
use crate::addr::Cidr;
use crate::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

const NO_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// An attack in progress.
#[derive(Debug, Clone)]
pub(crate) struct Incident {
    /// `"<start unix ms>-<n>"`.
    pub(crate) id: String,
    pub(super) seq: u64,
    pub(crate) vector: Vector,
    pub(crate) target: Target,
    /// "tcp", "udp", "icmp", "icmpv6"; None for fragments.
    pub(crate) proto: Option<&'static str>,
    /// ip_proto_flood: the IP protocol carrying most of the samples of other protocols.
    pub(crate) ip_proto: Option<u8>,
    /// The destination port, when there is one.
    pub(crate) port: Option<u16>,
    /// The service's port range, when the target is a range.
    pub(crate) port_range: Option<(u16, u16)>,
    /// The counter the rates refer to (the first that drove the incident).
    pub(crate) counter: String,
    /// Current rates of the driving counters, their baseline and threshold.
    pub(crate) pps: f64,
    pub(crate) bps: f64,
    pub(crate) baseline_pps: f64,
    pub(crate) threshold_pps: f64,
    pub(crate) peak_pps: f64,
    /// For connection-count incidents: the most connections one source holds.
    pub(crate) connections: Option<u32>,
    pub(crate) concentrated: bool,
    pub(crate) distinct_sources: f64,
    /// False when it opened during the warm-up, over an absolute ceiling rather than a
    /// learned baseline.
    pub(crate) warmed_up: bool,
    sources: [(IpAddr, f64); TOP],
    n_sources: usize,
    prefixes: [(Cidr, f64); TOP],
    n_prefixes: usize,
    /// Local addresses (or the prefix) its own packets hit, with their share of them.
    targets: [(Cidr, f64); TARGETS],
    n_targets: usize,
    /// Keys driving it, and keys in its reach (frozen while it is open).
    pub(super) drivers: Vec<usize>,
    pub(super) involved: Vec<usize>,
    /// Seconds on the detector's clock (negative after a restart for older incidents).
    pub(super) started: f64,
    pub(super) last_active: f64,
    pub(super) last_report: f64,
    /// A driver was in the attack this tick.
    pub(super) active: bool,
    pub(super) reported: bool,
}

impl Incident {
    /// Top sources with their share of its own samples; empty when distributed.
    pub(crate) fn sources(&self) -> &[(IpAddr, f64)] {
        &self.sources[..self.n_sources]
    }

    /// Top /24 (/64) prefixes with their share of its own samples.
    pub(crate) fn top_prefixes(&self) -> &[(Cidr, f64)] {
        &self.prefixes[..self.n_prefixes]
    }

    /// The local addresses its own samples hit, heaviest first, or the smallest prefix
    /// covering those of a /24 (/64) when more addresses of it were hit than are listed.
    pub(crate) fn targets(&self) -> &[(Cidr, f64)] {
        &self.targets[..self.n_targets]
    }

    /// When its first tick over threshold was, in seconds on the detector's clock.
    pub(crate) fn started_s(&self) -> f64 {
        self.started
    }

    /// Seconds from the first tick over threshold to the last tick in the attack.
    pub(crate) fn duration_s(&self) -> f64 {
        (self.last_active - self.started).max(0.0)
    }

    /// Its start, update or end as an event.
    pub(super) fn event(&self, kind: EventKind, connection_limit: u32) -> Event {
        let end = kind == EventKind::AttackEnd;
        Event {
            kind,
            incident: self.id.clone(),
            vector: self.vector,
            proto: self.proto,
            ip_proto: self.ip_proto,
            port: self.port,
            port_range: self.port_range,
            counter: self.counter.clone(),
            pps: self.pps,
            bps: self.bps,
            baseline_pps: self.baseline_pps,
            threshold_pps: self.threshold_pps,
            warmed_up: self.warmed_up,
            sources: self
                .sources()
                .iter()
                .map(|&(addr, share)| SourceShare { addr, share })
                .collect(),
            distinct_sources: self.distinct_sources,
            concentrated: self.concentrated,
            top_prefixes: shares(self.top_prefixes()),
            targets: shares(self.targets()),
            connections: self.connections,
            connection_limit: self.connections.map(|_| connection_limit),
            duration: end.then(|| Duration::from_secs_f64(self.duration_s())),
            peak_pps: end.then_some(self.peak_pps),
            pcap: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: String,
        seq: u64,
        vector: Vector,
        target: Target,
        port: Option<u16>,
        port_range: Option<(u16, u16)>,
        counter: String,
        drivers: Vec<usize>,
        involved: Vec<usize>,
        started: f64,
        now: f64,
    ) -> Incident {
        Incident {
            id,
            seq,
            vector,
            target,
            proto: vector.proto(),
            ip_proto: None,
            port,
            port_range,
            counter,
            pps: 0.0,
            bps: 0.0,
            baseline_pps: 0.0,
            threshold_pps: 0.0,
            peak_pps: 0.0,
            connections: None,
            concentrated: false,
            distinct_sources: 0.0,
            warmed_up: true,
            sources: [(NO_ADDR, 0.0); TOP],
            n_sources: 0,
            prefixes: [(Cidr::host(NO_ADDR), 0.0); TOP],
            n_prefixes: 0,
            targets: [(Cidr::host(NO_ADDR), 0.0); TARGETS],
            n_targets: 0,
            drivers,
            involved,
            started,
            last_active: now,
            last_report: now,
            active: true,
            reported: false,
        }
    }

    pub(super) fn set_sources(
        &mut self,
        sources: impl Iterator<Item = (IpAddr, f64)>,
        concentrated: bool,
    ) {
        self.n_sources = fill(&mut self.sources, sources);
        self.concentrated = concentrated;
    }

    pub(super) fn set_prefixes(&mut self, prefixes: impl Iterator<Item = (Cidr, f64)>) {
        self.n_prefixes = fill(&mut self.prefixes, prefixes);
    }

    pub(super) fn set_targets(&mut self, targets: impl Iterator<Item = (Cidr, f64)>) {
        self.n_targets = fill(&mut self.targets, targets);
    }

    /// Sources holding more connections than the limit, with their share of the service's.
    fn connection_sources(&mut self, sample: &Sample, service: Option<usize>, limit: u32) {
        let listed: u64 = sample.connections.iter().map(|c| u64::from(c.1)).sum();
        let on_service = service
            .and_then(|s| sample.service_connections.get(s))
            .map_or(0, |&n| u64::from(n));
        let total = on_service.max(listed).max(1) as f64;
        self.n_sources = 0;
        for &(addr, count) in sample.connections.iter().take(TOP) {
            if count <= limit {
                break;
            }
            self.sources[self.n_sources] = (addr, f64::from(count) / total);
            self.n_sources += 1;
        }
        if self.n_sources > 0 {
            self.concentrated = true;
            self.n_prefixes = 0;
            self.distinct_sources = sample.connections.len() as f64;
        }
    }
}

/// The IP protocol, other than TCP, UDP, ICMP and ICMPv6, with the most recent samples (the
/// last second or so: a short tick may have none).
fn other_protocol(sample: &Sample) -> Option<u8> {
    let mut counts = [0u32; 256];
    for p in sample.packets.iter() {
        if !p.fragment
            && !matches!(
                p.proto,
                IPPROTO_ICMP | IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6
            )
        {
            counts[usize::from(p.proto)] += 1;
        }
    }
    let (proto, &most) = counts.iter().enumerate().max_by_key(|(_, &n)| n)?;
    (most > 0).then_some(proto as u8)
}

/// Copies `items` into `slots` (as many as fit); returns how many.
fn fill<T: Copy>(slots: &mut [T], items: impl Iterator<Item = T>) -> usize {
    let mut n = 0;
    for (slot, item) in slots.iter_mut().zip(items) {
        *slot = item;
        n += 1;
    }
    n
}

impl Detector {
    /// Opens, feeds and ends incidents from this tick's candidates; pushes their events.
    pub(super) fn track(&mut self, sample: &Sample, t: f64, out: &mut Vec<Event>) {
        for incident in &mut self.incidents {
            incident.active = false;
        }
        for c in 0..self.candidates.len() {
            let candidate = self.candidates[c];
            let driver = candidate.driver;
            if let Some(seq) = self.keys[driver].owner {
                if let Some(incident) = self.incidents.iter_mut().find(|i| i.seq == seq) {
                    incident.active = true;
                }
                continue;
            }
            if !self.confirmed(driver) {
                continue; // pending: over threshold, not yet long enough
            }
            let same = self
                .incidents
                .iter()
                .position(|i| i.vector == candidate.vector && i.target == candidate.target);
            if let Some(i) = same {
                // The same attack seen on another counter (ICMP and ICMPv6, two reflector
                // ports with no destination port…).
                let involved = self.involved(candidate.vector, candidate.target, driver);
                let seq = self.incidents[i].seq;
                let incident = &mut self.incidents[i];
                incident.drivers.push(driver);
                incident.involved.extend(involved);
                incident.active = true;
                self.keys[driver].owner = Some(seq);
                continue;
            }
            self.open(candidate.vector, candidate.target, driver, t);
        }
        let limit = self.max_connections;
        let mut i = 0;
        while i < self.incidents.len() {
            self.measure(i, sample);
            let incident = &mut self.incidents[i];
            if incident.active {
                incident.last_active = t;
                let kind = if !incident.reported {
                    incident.reported = true;
                    Some(EventKind::AttackStart)
                } else if t - incident.last_report >= REPORT_INTERVAL - 1e-9 {
                    Some(EventKind::AttackUpdate)
                } else {
                    None
                };
                if let Some(kind) = kind {
                    incident.last_report = t;
                    let by_samples = incident
                        .drivers
                        .iter()
                        .any(|&d| !matches!(self.keys[d].role, Role::Connections(_)));
                    self.count_own(i, sample, by_samples);
                    out.push(self.incidents[i].event(kind, limit));
                }
            } else if t - incident.last_active >= self.hold - 1e-9 {
                out.push(incident.event(EventKind::AttackEnd, limit));
                if let (Vector::HttpFlood, Target::Service(s)) = (incident.vector, incident.target)
                {
                    if let Some(svc) = self.services.get_mut(s) {
                        svc.http_flood_ended = t;
                    }
                }
                let seq = self.incidents[i].seq;
                for key in &mut self.keys {
                    if key.owner == Some(seq) {
                        key.owner = None;
                    }
                }
                self.incidents.remove(i);
                continue;
            }
            i += 1;
        }
    }

    fn open(&mut self, vector: Vector, target: Target, driver: usize, t: f64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let started = self.keys[driver].over_since.min(t);
        let start_ms = self.origin_ms + (started * 1000.0).round() as i64;
        let id = format!("{}-{seq}", start_ms.max(0));
        let (port, port_range) = match target {
            Target::Any => (None, None),
            Target::Port(p) => (Some(p), None),
            Target::Service(s) => {
                let svc = &self.services[s];
                if svc.first == svc.last {
                    (Some(svc.first), None)
                } else {
                    (None, Some((svc.first, svc.last)))
                }
            }
        };
        let involved = self.involved(vector, target, driver);
        let mut drivers = Vec::with_capacity(4);
        drivers.push(driver);
        let mut incident = Incident::new(
            id,
            seq,
            vector,
            target,
            port,
            port_range,
            self.keys[driver].name.clone(),
            drivers,
            involved,
            started,
            t,
        );
        incident.warmed_up = self.warmed_up();
        if vector == Vector::IcmpFlood
            && driver == self.fixed(crate::sense::counters::class::ICMPV6)
        {
            incident.proto = Some("icmpv6");
        }
        self.keys[driver].owner = Some(seq);
        self.incidents.push(incident);
    }

    /// Rates and peak of incident `i` from this tick, and a connection-count incident's
    /// sources (conntrack's). Sources from samples are counted when it reports
    /// ([`Detector::count_own`]).
    fn measure(&mut self, i: usize, sample: &Sample) {
        let incident = &self.incidents[i];
        let (mut pps, mut bps, mut baseline) = (0.0, 0.0, 0.0);
        let mut connections: Option<u32> = None;
        let mut counted = false;
        for &d in &incident.drivers {
            let key = &self.keys[d];
            if let Role::Connections(_) = key.role {
                let held = key.pps as u32;
                connections = Some(connections.map_or(held, |c| c.max(held)));
            } else {
                pps += key.pps;
                bps += key.bps;
                baseline += key.base.mean();
                counted = true;
            }
        }
        let primary = &self.keys[incident.drivers[0]];
        let mut threshold = primary.threshold;
        let service = match incident.target {
            Target::Service(s) => Some(s),
            _ => None,
        };
        if !counted {
            // Connection counts only: the service's packets give the rates.
            if let Some(svc) = service.and_then(|s| self.services.get(s)) {
                let key = &self.keys[svc.packets];
                pps = key.pps;
                bps = key.bps;
                baseline = key.base.mean();
                threshold = key.threshold;
            }
        }
        let active = incident.active;
        let limit = self.max_connections;
        let incident = &mut self.incidents[i];
        incident.pps = pps;
        incident.bps = bps;
        incident.baseline_pps = baseline;
        incident.threshold_pps = threshold;
        incident.peak_pps = incident.peak_pps.max(pps);
        if connections.is_some() {
            incident.connections = connections;
        }
        if !active {
            return; // fading: the samples are no longer the attack's
        }
        if incident.vector == Vector::IpProtoFlood {
            incident.ip_proto = other_protocol(sample).or(incident.ip_proto);
        }
        if !counted {
            incident.connection_sources(sample, service, limit);
        }
    }
}

fn shares(blocks: &[(Cidr, f64)]) -> Vec<PrefixShare> {
    blocks
        .iter()
        .map(|&(prefix, share)| PrefixShare { prefix, share })
        .collect()
}
