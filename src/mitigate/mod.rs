//! Mitigation: incidents in, kernel changes out, as plain data. Pure — no I/O, the time is
//! passed in — so every decision is tested without a kernel. The daemon applies a tick's
//! changes as one nf_tables batch (or, in monitor mode, only reports them).
//!
//! Per vector: a concentrated flood's heaviest sources are banned in `ban4`/`ban6` with a
//! timeout (refreshed while they go on sending), and a /24 (/64) that collects `prefix_after`
//! banned sources and keeps sending for longer than [`PREFIX_CONFIRM`] is banned whole in
//! `bannet4`/`bannet6` (refreshed while the incident lasts); new bans, hosts and prefixes alike,
//! are held to `max_bans_per_second`, and a ban that ran out is forgotten; a distributed flood
//! gets an aggregate measure instead — its sources metered and its port held to a rate (a TCP
//! port: only the segments outside any connection; an HTTP or TCP connection flood: new
//! connections metered per source), or, aimed at no single port (random ports), its
//! transport's traffic to closed ports held to a low rate; Slowloris gets a per-source
//! connection limit;
//! amplification gets unsolicited UDP from the reflector's port dropped; ICMP and fragment
//! floods are held to a rate, and so is another IP protocol's (GRE, ESP…) distributed flood; a
//! SYN flood on a TCP service port gets the kernel's SYN proxy on that port (SYN cookies where
//! the kernel has no `synproxy`, or on other ports); SYN-ACKs of no connection of ours
//! (reflection) and TCP with none of SYN, RST and ACK (odd flags) are dropped. Aggregate measures are keys with a timeout in measure sets (so
//! a dead agent leaves nothing that lasts). Everything an incident added is lifted when it
//! ends. Safelisted sources, the host's own addresses and the ranges `addr::never_banned`
//! names (loopback, link-local, multicast…) are never banned, nor metered (the kernel's ban
//! and meter rules skip the safelist); a flood whose heavy sources are safelisted (spoofed)
//! gets its aggregate measure, which the kernel applies to every source of that traffic (the
//! closed-port limit too). An operator may lift a measure for the rest of its incident, and
//! ports may be exempt from port measures (`standdown`).

mod standdown;
mod state;

pub use standdown::{Lift, Standdown, StoodDownBy};
pub(crate) use state::{left_until, wall_ms, MitigatedIncident, SavedItem};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::addr::{protected, Cidr};
use crate::config::{Config, Mode, Proto};
use crate::detect::{Event, EventKind, Vector};
use crate::event::{self, EventBody};
use crate::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use crate::ruleset::change::{Change, InForce, Item};
use crate::ruleset::expr::{ip_proto_name, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::ruleset::Measure;

/// What a measure does, as the events' `action` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Ban,
    BlockReflector,
    LimitPort,
    LimitIcmp,
    LimitProto,
    BlockSynack,
    BlockFlags,
    LimitFragments,
    MeterNewConnections,
    LimitConnections,
    SynCookies,
    LimitClosedPorts,
    Synproxy,
}

impl Action {
    /// Every action a measure can be (`IncidentMeasure::action`, the events' `action`).
    pub(crate) const ALL: [Action; 13] = [
        Action::Ban,
        Action::BlockReflector,
        Action::LimitPort,
        Action::LimitIcmp,
        Action::LimitProto,
        Action::BlockSynack,
        Action::BlockFlags,
        Action::LimitFragments,
        Action::MeterNewConnections,
        Action::LimitConnections,
        Action::SynCookies,
        Action::LimitClosedPorts,
        Action::Synproxy,
    ];

    /// The name in events, `ftagent lift` and metrics (as serde writes it).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Ban => "ban",
            Action::BlockReflector => "block_reflector",
            Action::LimitPort => "limit_port",
            Action::LimitIcmp => "limit_icmp",
            Action::LimitProto => "limit_proto",
            Action::BlockSynack => "block_synack",
            Action::BlockFlags => "block_flags",
            Action::LimitFragments => "limit_fragments",
            Action::MeterNewConnections => "meter_new_connections",
            Action::LimitConnections => "limit_connections",
            Action::SynCookies => "syn_cookies",
            Action::LimitClosedPorts => "limit_closed_ports",
            Action::Synproxy => "synproxy",
        }
    }

    /// The action of that name.
    pub(crate) fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What was done (or, in monitor mode, would have been done) for an incident; serialised as
/// the fields of its event (README, section "Events").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MitigationEvent {
    /// `mitigation_applied`, or `mitigation_removed`.
    #[serde(skip)]
    pub(crate) applied: bool,
    pub(crate) incident: String,
    pub(crate) vector: &'static str,
    pub(crate) action: Action,
    #[serde(serialize_with = "event::cidrs")]
    pub(crate) addresses: Vec<Cidr>,
    /// The port, protocol and rate of an aggregate measure.
    pub(crate) port: Option<u16>,
    pub(crate) proto: Option<&'static str>,
    pub(crate) rate_pps: Option<u32>,
    #[serde(rename = "timeout_s", serialize_with = "event::whole_seconds")]
    pub(crate) timeout: Option<Duration>,
    /// Monitor mode: reported, not done.
    #[serde(rename = "mode", serialize_with = "event::mode")]
    pub(crate) monitor: bool,
}

impl MitigationEvent {
    /// `mitigation_applied` or `mitigation_removed`.
    pub(crate) fn name(&self) -> &'static str {
        if self.applied {
            "mitigation_applied"
        } else {
            "mitigation_removed"
        }
    }

    /// One JSON line (the schema is in the README, section "Events").
    pub(crate) fn to_json(&self, wall_clock: SystemTime) -> String {
        event::line(self, wall_clock)
    }
}

impl EventBody for MitigationEvent {
    fn name(&self) -> &'static str {
        MitigationEvent::name(self)
    }
}

/// One thing an open incident keeps in force (see [`Mitigator::measures`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IncidentMeasure {
    pub(crate) incident: String,
    pub(crate) vector: &'static str,
    /// As in the mitigation events: `ban`, `limit_port`, `syn_cookies`…
    pub(crate) action: Action,
    pub(crate) target: Target,
}

/// What a measure in force acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Ban(Cidr),
    Measure(Measure),
    SynCookies,
}

/// A prefix holding `prefix_after` banned hosts is banned whole once its sources have kept
/// sending this long: more than the detector's report interval (1 s) — the samples of one
/// tick of spoofed sources name them in one report, or two when they fall across a report's
/// edge, never in reports this far apart.
pub(crate) const PREFIX_CONFIRM: Duration = Duration::from_millis(1500);

/// What one incident has put in place.
#[derive(Debug, Default)]
struct Measures {
    vector: &'static str,
    /// Banned hosts whose ban has not run out.
    hosts: HashSet<Cidr>,
    /// How many of `hosts` each /24 (/64) holds, kept with every ban and expiry.
    per_prefix: HashMap<Cidr, u32>,
    /// Prefixes holding `prefix_after` banned hosts whose sources send, and since when (the
    /// clock of `plan`); forgotten at the first report they are quiet in.
    crowded: HashMap<Cidr, Duration>,
    prefixes: HashSet<Cidr>,
    aggregates: Vec<Measure>,
    syn_cookies: bool,
    /// A set was full: this incident gets its aggregate measure instead of more bans.
    escalated: bool,
}

impl Measures {
    /// Takes a newly banned host in; false if it was there.
    fn add_host(&mut self, host: Cidr) -> bool {
        if !self.hosts.insert(host) {
            return false;
        }
        *self.per_prefix.entry(prefix_of(host.addr())).or_default() += 1;
        true
    }

    /// Forgets a ban (run out, refused); false if it held none.
    fn forget(&mut self, cidr: &Cidr) -> bool {
        if self.hosts.remove(cidr) {
            let prefix = prefix_of(cidr.addr());
            if let Some(n) = self.per_prefix.get_mut(&prefix) {
                *n -= 1;
                if *n == 0 {
                    self.per_prefix.remove(&prefix);
                }
            }
            return true;
        }
        self.prefixes.remove(cidr)
    }

    fn holds(&self, cidr: &Cidr) -> bool {
        self.hosts.contains(cidr) || self.prefixes.contains(cidr)
    }

    /// The bans, hosts then prefixes, each sorted.
    fn bans(&self) -> Vec<Cidr> {
        let mut hosts: Vec<Cidr> = self.hosts.iter().copied().collect();
        let mut prefixes: Vec<Cidr> = self.prefixes.iter().copied().collect();
        hosts.sort_unstable();
        prefixes.sort_unstable();
        hosts.extend(prefixes);
        hosts
    }
}

/// Decides the kernel changes for the incidents of each tick.
#[derive(Debug)]
pub(crate) struct Mitigator {
    monitor: bool,
    ban_duration: Duration,
    min_share: f64,
    prefix_after: usize,
    max_bans_per_second: f64,
    /// New bans the budget still allows, refilled at `max_bans_per_second`.
    budget: f64,
    last: Option<Duration>,
    safelist: Vec<Cidr>,
    active: HashMap<String, Measures>,
    /// When each item the incidents hold runs out in the kernel (the clock of `plan`).
    until: HashMap<Item, Duration>,
    /// The bans by when they run out, each looked at when its time comes: refreshed since,
    /// it goes back in; else it is dropped from the incidents.
    expiry: BinaryHeap<Reverse<(Duration, Cidr)>>,
    /// Counts changes to what the incidents hold (refreshes aside): the daemon saves on change.
    revision: u64,
    aggregate_duration: Duration,
    port_limit: u32,
    icmp_limit: u32,
    fragment_limit: u32,
    closed_limit: u32,
    /// The TCP service ports (ranges) whose SYN floods the SYN proxy takes; empty where it is
    /// off or the kernel lacks it (SYN cookies then).
    synproxy_services: Vec<(u16, u16)>,
    /// `mitigation.never_limit_ports`: no measure on these ports.
    never_limit: Vec<u16>,
    /// What operators lifted (and never-limited measures skipped), per open incident.
    lifted: HashMap<String, Vec<Lift>>,
    /// Measures stood down, for their events (`drain_notices`).
    notices: Vec<Standdown>,
}

impl Mitigator {
    /// `safelist` is everything never to be banned: the configured CIDRs and the automatic
    /// ones (own addresses, gateways, resolvers, SSH peers).
    pub(crate) fn new(config: &Config, safelist: Vec<Cidr>) -> Mitigator {
        let m = &config.mitigation;
        let rate = f64::from(m.max_bans_per_second);
        Mitigator {
            monitor: m.mode == Mode::Monitor,
            ban_duration: m.ban_duration,
            min_share: m.min_source_share,
            prefix_after: m.prefix_after as usize,
            max_bans_per_second: rate,
            budget: rate,
            last: None,
            safelist,
            active: HashMap::new(),
            until: HashMap::new(),
            expiry: BinaryHeap::new(),
            revision: 0,
            aggregate_duration: m.aggregate_duration,
            port_limit: m.port_limit_pps,
            icmp_limit: m.icmp_limit_pps,
            fragment_limit: m.fragment_limit_pps,
            closed_limit: m.closed_port_limit_pps,
            synproxy_services: config
                .services
                .iter()
                .filter(|s| m.synproxy && s.proto == Proto::Tcp)
                .map(|s| (s.ports.first, s.ports.last))
                .collect(),
            never_limit: m.never_limit_ports.clone(),
            lifted: HashMap::new(),
            notices: Vec::new(),
        }
    }

    pub(crate) fn is_monitor(&self) -> bool {
        self.monitor
    }

    /// Takes a reloaded configuration and safelist, keeping the open incidents' measures (so
    /// they are refreshed while the incidents last and lifted when they end) and the budget.
    pub(crate) fn reconfigure(&mut self, config: &Config, safelist: Vec<Cidr>) {
        let fresh = Mitigator::new(config, safelist);
        *self = Mitigator {
            budget: self.budget.min(fresh.max_bans_per_second),
            last: self.last,
            active: std::mem::take(&mut self.active),
            lifted: std::mem::take(&mut self.lifted),
            until: std::mem::take(&mut self.until),
            expiry: std::mem::take(&mut self.expiry),
            revision: self.revision,
            ..fresh
        };
    }

    /// Takes a new safelist (the automatic one refreshed): everything never to be banned.
    pub(crate) fn set_safelist(&mut self, safelist: Vec<Cidr>) {
        self.safelist = safelist;
    }

    /// Changes to what the incidents hold so far: bans and measures added, lifted, run out
    /// (not refreshes). Saved state that was taken at another revision is out of date.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// What each open incident has in force, one entry per ban, aggregate measure and SYN
    /// cookies, by incident (for `ftagent status`).
    pub(crate) fn measures(&self) -> Vec<IncidentMeasure> {
        let mut all = Vec::new();
        for (incident, m) in &self.active {
            let entry = |action, target| IncidentMeasure {
                incident: incident.clone(),
                vector: m.vector,
                action,
                target,
            };
            for cidr in m.bans() {
                all.push(entry(Action::Ban, Target::Ban(cidr)));
            }
            for &measure in &m.aggregates {
                let (action, ..) = describe(measure, 0, 0, 0, 0);
                all.push(entry(action, Target::Measure(measure)));
            }
            if m.syn_cookies {
                all.push(entry(Action::SynCookies, Target::SynCookies));
            }
        }
        all.sort_by(|a, b| a.incident.cmp(&b.incident));
        all
    }

    /// The changes for this tick's detection events, and the events describing them. `now` is
    /// monotonic time since start.
    pub(crate) fn plan(
        &mut self,
        events: &[Event],
        now: Duration,
        changes: &mut Vec<Change>,
        out: &mut Vec<MitigationEvent>,
    ) {
        let dt = self
            .last
            .map_or(0.0, |last| now.saturating_sub(last).as_secs_f64());
        self.last = Some(now);
        self.budget = (self.budget + dt * self.max_bans_per_second).min(self.max_bans_per_second);
        self.expire(now);
        let first = changes.len();
        for event in events {
            match event.kind {
                EventKind::AttackStart | EventKind::AttackUpdate => self.act(event, changes, out),
                EventKind::AttackEnd => self.undo(&event.incident, changes, out),
            }
        }
        for change in &changes[first..] {
            match *change {
                Change::Ban { cidr, timeout } => self.track(cidr, now + timeout),
                Change::Enable { measure, timeout } => {
                    self.until.insert(Item::Measure(measure), now + timeout);
                }
                Change::Unban { cidr } => {
                    self.until.remove(&Item::Ban(cidr));
                }
                Change::Disable { measure } => {
                    self.until.remove(&Item::Measure(measure));
                }
                Change::SynCookies { .. } => {}
            }
        }
    }

    fn proxied(&self, port: u16) -> bool {
        self.synproxy_services
            .iter()
            .any(|&(first, last)| (first..=last).contains(&port))
    }

    /// Whether any incident being mitigated has a port under the SYN proxy (which needs
    /// `nf_conntrack_tcp_loose` off meanwhile).
    pub(crate) fn holds_synproxy(&self) -> bool {
        self.active.values().any(|m| {
            m.aggregates
                .iter()
                .any(|a| matches!(a, Measure::SynProxy(_)))
        })
    }

    /// Keeps when a ban runs out; a new one joins the expiry queue.
    fn track(&mut self, cidr: Cidr, until: Duration) {
        if self.until.insert(Item::Ban(cidr), until).is_none() {
            self.expiry.push(Reverse((until, cidr)));
        }
    }

    /// Forgets the bans that ran out by `now` without a refresh: the kernel dropped them, a
    /// source that sends again is banned anew (and charged to the budget).
    fn expire(&mut self, now: Duration) {
        while let Some(&Reverse((at, cidr))) = self.expiry.peek() {
            if at > now {
                break;
            }
            self.expiry.pop();
            match self.until.get(&Item::Ban(cidr)) {
                Some(&until) if until > now => self.expiry.push(Reverse((until, cidr))),
                Some(_) => {
                    self.until.remove(&Item::Ban(cidr));
                    for m in self.active.values_mut() {
                        m.forget(&cidr);
                    }
                    self.revision += 1;
                }
                None => {} // lifted meanwhile
            }
        }
    }

    /// The measures for one start or update of an incident.
    fn act(&mut self, event: &Event, changes: &mut Vec<Change>, out: &mut Vec<MitigationEvent>) {
        let escalated = self
            .active
            .get(&event.incident)
            .is_some_and(|m| m.escalated);
        // Heavy sources that are safelisted (spoofed, say) cannot be banned: their share of
        // the flood gets the aggregate measure, as a distributed flood does — beside the bans
        // of the others, if any. The kernel applies it to every source, the safelisted too.
        let heavy_safelisted = |safelisted: bool| {
            event.sources.iter().any(|s| {
                s.share >= self.min_share
                    && protected(&self.safelist, &Cidr::host(s.addr)) == safelisted
            })
        };
        let concentrated = event.concentrated && !escalated && heavy_safelisted(false);
        let aggregate = !concentrated || heavy_safelisted(true);
        let reflector = event
            .counter
            .strip_prefix("amp_")
            .and_then(|p| p.parse::<u16>().ok());
        let mut aggregates: Vec<Measure> = Vec::new();
        let mut syn_cookies = false;
        match event.vector {
            _ if reflector.is_some() => aggregates.extend(reflector.map(Measure::BlockReflector)),
            // The SYN proxy on a service port (SYN cookies before conntrack and the stack);
            // SYN cookies in the stack elsewhere, or without it. To random ports (no single
            // port), closed ones mostly: their SYNs held too.
            Vector::SynFlood => {
                match event.port.filter(|&p| self.proxied(p)) {
                    Some(port) => aggregates.push(Measure::SynProxy(port)),
                    None => syn_cookies = true,
                }
                if !concentrated && aimed_at_no_port(event) {
                    aggregates.push(Measure::LimitClosedPorts(IPPROTO_TCP));
                }
            }
            Vector::IcmpFlood => {
                let proto = if event.proto == Some("icmpv6") {
                    IPPROTO_ICMPV6
                } else {
                    IPPROTO_ICMP
                };
                aggregates.push(Measure::LimitProto(proto));
            }
            Vector::FragmentFlood => aggregates.extend([
                Measure::LimitFragments(NFPROTO_IPV4),
                Measure::LimitFragments(NFPROTO_IPV6),
            ]),
            // The reflectors are innocent servers answering spoofed SYNs: no bans, the
            // SYN-ACKs that belong to no connection of ours are dropped.
            Vector::SynackReflection => aggregates.extend([
                Measure::BlockSynAcks(NFPROTO_IPV4),
                Measure::BlockSynAcks(NFPROTO_IPV6),
            ]),
            // No valid segment has none of SYN, RST and ACK: dropped whole, and concentrated
            // senders banned besides.
            Vector::TcpFlagFlood => aggregates.extend([
                Measure::BlockOddFlags(NFPROTO_IPV4),
                Measure::BlockOddFlags(NFPROTO_IPV6),
            ]),
            Vector::IpProtoFlood if aggregate => {
                aggregates.extend(event.ip_proto.map(Measure::LimitProto))
            }
            Vector::UdpFlood if aggregate => {
                aggregates.extend(port_or_closed(event, IPPROTO_UDP, Measure::LimitUdpPort))
            }
            // Real connections, many sources: their new connections metered per source (a
            // port limit would hold only what is outside connections, none of theirs).
            Vector::HttpFlood if aggregate => {
                aggregates.extend(event.port.map(Measure::MeterNewConnections))
            }
            Vector::TcpConnectionFlood if aggregate => aggregates.extend(port_or_closed(
                event,
                IPPROTO_TCP,
                Measure::MeterNewConnections,
            )),
            Vector::Slowloris => aggregates.extend(event.port.map(Measure::LimitConnections)),
            // Segments outside any connection, held after conntrack: the port's established
            // connections pass untouched.
            Vector::AckFlood | Vector::RstFlood if aggregate => {
                aggregates.extend(port_or_closed(event, IPPROTO_TCP, Measure::LimitTcpPort))
            }
            _ => {}
        }
        let vector = event.vector.name();
        self.stand_down(&event.incident, vector, &mut aggregates, &mut syn_cookies);
        let cookies_already_on = self
            .active
            .iter()
            .any(|(id, m)| *id != event.incident && m.syn_cookies);
        let measures = self.active.entry(event.incident.clone()).or_default();
        measures.vector = event.vector.name();
        for measure in aggregates {
            let new = !measures.aggregates.contains(&measure);
            if new {
                measures.aggregates.push(measure);
                self.revision += 1;
            }
            changes.push(Change::Enable {
                measure,
                timeout: self.aggregate_duration,
            });
            if new {
                let (action, port, proto, rate) = describe(
                    measure,
                    self.port_limit,
                    self.icmp_limit,
                    self.fragment_limit,
                    self.closed_limit,
                );
                out.push(MitigationEvent {
                    applied: true,
                    incident: event.incident.clone(),
                    vector: measures.vector,
                    action,
                    addresses: Vec::new(),
                    port,
                    proto,
                    rate_pps: rate,
                    timeout: Some(self.aggregate_duration),
                    monitor: self.monitor,
                });
            }
        }
        if syn_cookies && !measures.syn_cookies {
            measures.syn_cookies = true;
            if !cookies_already_on {
                changes.push(Change::SynCookies { on: true });
                out.push(MitigationEvent {
                    applied: true,
                    incident: event.incident.clone(),
                    vector: measures.vector,
                    action: Action::SynCookies,
                    addresses: Vec::new(),
                    port: event.port,
                    proto: Some("tcp"),
                    rate_pps: None,
                    timeout: None,
                    monitor: self.monitor,
                });
            }
        }
        self.refresh_prefixes(&event.incident, changes);
        let bans = !matches!(event.vector, Vector::Slowloris | Vector::SynackReflection);
        if concentrated && reflector.is_none() && bans && !self.bans_lifted(&event.incident) {
            let (first_change, first_event) = (changes.len(), out.len());
            self.ban_sources(event, changes, out);
            self.drop_lifted_bans(&event.incident, first_change, first_event, changes, out);
        }
    }

    /// Refreshes the incident's prefix bans that have less than half their time left: they
    /// last as long as the incident (their hosts' own bans run out meanwhile).
    fn refresh_prefixes(&mut self, incident: &str, changes: &mut Vec<Change>) {
        let Some(m) = self.active.get(incident) else {
            return;
        };
        let now = self.last.unwrap_or_default();
        for &prefix in &m.prefixes {
            let until = self.until.get(&Item::Ban(prefix)).copied();
            let left = until.unwrap_or_default().saturating_sub(now);
            if left < self.ban_duration / 2 {
                changes.push(Change::Ban {
                    cidr: prefix,
                    timeout: self.ban_duration,
                });
            }
        }
    }

    /// Bans the incident's heavy sources (refreshing the ones already banned), and their
    /// prefixes once crowded for [`PREFIX_CONFIRM`]; each new ban is charged to the budget.
    fn ban_sources(
        &mut self,
        event: &Event,
        changes: &mut Vec<Change>,
        out: &mut Vec<MitigationEvent>,
    ) {
        let timeout = self.ban_duration;
        let now = self.last.unwrap_or_default();
        let heavy = event.sources.iter().filter(|s| {
            s.share >= self.min_share && !protected(&self.safelist, &Cidr::host(s.addr))
        });
        let heavy: Vec<IpAddr> = heavy.map(|s| s.addr).collect();
        let measures = self.active.entry(event.incident.clone()).or_default();
        let mut added = Vec::new();
        // The prefixes this report's heavy sources are in.
        let mut sending: Vec<Cidr> = Vec::with_capacity(heavy.len());
        for addr in heavy {
            let host = Cidr::host(addr);
            let prefix = prefix_of(addr);
            if !sending.contains(&prefix) {
                sending.push(prefix);
            }
            if measures.prefixes.contains(&prefix) {
                continue; // covered by its prefix, refreshed with the incident
            }
            if measures.hosts.contains(&host) {
                changes.push(Change::Ban {
                    cidr: host,
                    timeout,
                }); // re-offence: refresh
                continue;
            }
            if self.budget < 1.0 {
                continue; // the cap: the next update tries again
            }
            self.budget -= 1.0;
            self.revision += 1;
            measures.add_host(host);
            changes.push(Change::Ban {
                cidr: host,
                timeout,
            });
            added.push(host);
        }
        let after = self.prefix_after as u32;
        let crowded = |m: &Measures, p: &Cidr| {
            !m.prefixes.contains(p) && m.per_prefix.get(p).is_some_and(|&n| n >= after)
        };
        // Quiet in this report, or no longer holding enough banned hosts: starts afresh.
        let per_prefix = &measures.per_prefix;
        measures
            .crowded
            .retain(|p, _| sending.contains(p) && per_prefix.get(p).is_some_and(|&n| n >= after));
        for prefix in sending {
            if !crowded(measures, &prefix) || protected(&self.safelist, &prefix) {
                continue;
            }
            let since = *measures.crowded.entry(prefix).or_insert(now);
            if now.saturating_sub(since) < PREFIX_CONFIRM || self.budget < 1.0 {
                continue;
            }
            self.budget -= 1.0;
            self.revision += 1;
            measures.crowded.remove(&prefix);
            measures.prefixes.insert(prefix);
            changes.push(Change::Ban {
                cidr: prefix,
                timeout,
            });
            added.push(prefix);
        }
        if !added.is_empty() {
            out.push(MitigationEvent {
                applied: true,
                incident: event.incident.clone(),
                vector: measures.vector,
                action: Action::Ban,
                addresses: added,
                port: None,
                proto: None,
                rate_pps: None,
                timeout: Some(timeout),
                monitor: self.monitor,
            });
        }
    }

    /// Lifts what the incident added, except what another open incident still needs.
    fn undo(&mut self, incident: &str, changes: &mut Vec<Change>, out: &mut Vec<MitigationEvent>) {
        self.lifted.remove(incident);
        let Some(measures) = self.active.remove(incident) else {
            return;
        };
        self.revision += 1;
        let others = || self.active.values();
        let mut lifted = measures.bans();
        lifted.retain(|c| !others().any(|m| m.holds(c)));
        let event = |action, addresses, (port, proto, rate_pps): (Option<u16>, Option<&'static str>, Option<u32>)| {
            MitigationEvent {
                applied: false,
                incident: incident.to_string(),
                vector: measures.vector,
                action,
                addresses,
                port,
                proto,
                rate_pps,
                timeout: None,
                monitor: self.monitor,
            }
        };
        if !lifted.is_empty() {
            changes.extend(lifted.iter().map(|&cidr| Change::Unban { cidr }));
            out.push(event(Action::Ban, lifted, (None, None, None)));
        }
        for &measure in &measures.aggregates {
            if others().any(|m| m.aggregates.contains(&measure)) {
                continue;
            }
            changes.push(Change::Disable { measure });
            let (action, port, proto, rate) = describe(
                measure,
                self.port_limit,
                self.icmp_limit,
                self.fragment_limit,
                self.closed_limit,
            );
            out.push(event(action, Vec::new(), (port, proto, rate)));
        }
        if measures.syn_cookies && !others().any(|m| m.syn_cookies) {
            changes.push(Change::SynCookies { on: false });
            out.push(event(
                Action::SynCookies,
                Vec::new(),
                (None, Some("tcp"), None),
            ));
        }
    }

    /// Everything the open incidents keep in force at `now`, each once, with the time it has
    /// left (what ran out meanwhile is gone from the kernel too, and stays out).
    pub(crate) fn in_force(&self, now: Duration) -> Vec<InForce> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for m in self.active.values() {
            let bans = m.hosts.iter().chain(&m.prefixes).map(|&c| Item::Ban(c));
            for item in bans.chain(m.aggregates.iter().map(|&a| Item::Measure(a))) {
                let Some(left) = self.until.get(&item).and_then(|u| u.checked_sub(now)) else {
                    continue;
                };
                if left.is_zero() || !seen.insert(item) {
                    continue;
                }
                let timeout = match item {
                    Item::Ban(_) => self.ban_duration,
                    Item::Measure(_) => self.aggregate_duration,
                };
                out.push(InForce {
                    item,
                    timeout: timeout.max(left),
                    left,
                });
            }
        }
        out
    }

    /// The kernel refused a tick's changes: forget the bans they would have added, so the
    /// next update tries again. With `set_full` (ENFILE), the incidents whose bans were refused
    /// get their aggregate measure from then on instead of more bans.
    pub(crate) fn rejected(&mut self, changes: &[Change], set_full: bool) {
        for change in changes {
            match change {
                Change::Ban { cidr, .. } => {
                    self.until.remove(&Item::Ban(*cidr));
                    self.revision += 1;
                    for m in self.active.values_mut() {
                        if m.forget(cidr) {
                            m.escalated |= set_full;
                        }
                    }
                }
                Change::Enable { measure, .. } => {
                    self.until.remove(&Item::Measure(*measure));
                    for m in self.active.values_mut() {
                        m.aggregates.retain(|a| a != measure);
                    }
                }
                _ => {}
            }
        }
    }
}

/// An aggregate measure's action, port, protocol and rate, for its events.
fn describe(
    measure: Measure,
    port_limit: u32,
    icmp_limit: u32,
    fragment_limit: u32,
    closed_limit: u32,
) -> (Action, Option<u16>, Option<&'static str>, Option<u32>) {
    match measure {
        Measure::BlockReflector(p) => (Action::BlockReflector, Some(p), Some("udp"), None),
        Measure::LimitUdpPort(p) => (Action::LimitPort, Some(p), Some("udp"), Some(port_limit)),
        Measure::LimitTcpPort(p) => (Action::LimitPort, Some(p), Some("tcp"), Some(port_limit)),
        Measure::LimitProto(IPPROTO_ICMPV6) => {
            (Action::LimitIcmp, None, Some("icmpv6"), Some(icmp_limit))
        }
        Measure::LimitProto(IPPROTO_ICMP) => {
            (Action::LimitIcmp, None, Some("icmp"), Some(icmp_limit))
        }
        Measure::LimitProto(p) => (
            Action::LimitProto,
            None,
            Some(ip_proto_name(p).unwrap_or("ip")),
            Some(icmp_limit),
        ),
        Measure::LimitFragments(NFPROTO_IPV6) => (
            Action::LimitFragments,
            None,
            Some("ipv6"),
            Some(fragment_limit),
        ),
        Measure::LimitFragments(_) => (
            Action::LimitFragments,
            None,
            Some("ipv4"),
            Some(fragment_limit),
        ),
        Measure::MeterNewConnections(p) => {
            (Action::MeterNewConnections, Some(p), Some("tcp"), None)
        }
        Measure::LimitConnections(p) => (Action::LimitConnections, Some(p), Some("tcp"), None),
        Measure::BlockSynAcks(_) => (Action::BlockSynack, None, Some("tcp"), None),
        Measure::BlockOddFlags(_) => (Action::BlockFlags, None, Some("tcp"), None),
        Measure::SynProxy(p) => (Action::Synproxy, Some(p), Some("tcp"), None),
        Measure::LimitClosedPorts(p) => (
            Action::LimitClosedPorts,
            None,
            Some(ip_proto_name(p).unwrap_or("ip")),
            Some(closed_limit),
        ),
    }
}

/// Whether an incident is aimed at no port: random destination ports (not a service's range).
fn aimed_at_no_port(event: &Event) -> bool {
    event.port.is_none() && event.port_range.is_none()
}

/// A distributed UDP or TCP flood's measure: its port held to a rate, or, aimed at no port,
/// its protocol's closed ports; none for a service's port range.
fn port_or_closed(event: &Event, proto: u8, port_limit: fn(u16) -> Measure) -> Option<Measure> {
    match event.port {
        Some(port) => Some(port_limit(port)),
        None => aimed_at_no_port(event).then_some(Measure::LimitClosedPorts(proto)),
    }
}

/// The /24 (IPv6 /64) of an address.
fn prefix_of(addr: IpAddr) -> Cidr {
    let (net, len) = match addr {
        IpAddr::V4(a) => (IpAddr::V4((u32::from(a) & 0xffff_ff00).into()), 24),
        IpAddr::V6(a) => (
            IpAddr::V6((u128::from(a) & !((1u128 << 64) - 1)).into()),
            64,
        ),
    };
    Cidr::new(net, len).unwrap_or(Cidr::host(addr))
}

#[cfg(test)]
mod tests;
