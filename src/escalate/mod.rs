//! Escalation: which incidents the upstream routers are asked to drop, as plain data. Pure —
//! no I/O, the time is passed in — so every decision is tested without a BGP daemon; the
//! daemon hands the resulting set of announcements to `bgp::Speaker`, which makes the BGP
//! daemon announce exactly that set.
//!
//! A volumetric incident is escalated when its rate reaches `bgp.escalate_pps` or
//! `bgp.escalate_bps`, or when it is still over its threshold `bgp.escalate_after` after it
//! began (local mitigation has not brought the received rate down). It then gets a blackhole
//! route for the attacked address (RTBH) and FlowSpec rules matching it (destination,
//! protocol, destination port — source port for amplification —, fragments, and for a
//! concentrated attack its sources, never a safelisted one, one of the host's own or one
//! `addr::never_banned` names), never more than `bgp.max_announcements` in all. The
//! attacked address is the sampled destination carrying at least half of a tick's samples,
//! and must be one of this host's (or in `bgp.destinations`). An announcement is withdrawn
//! when no open incident needs it any more, but not before `bgp.min_duration`. Routes found
//! in the BGP daemon at start (ours, by their tag community) are kept while an incident
//! claims them again within the start-up grace, and withdrawn after it otherwise.

mod route;
#[cfg(test)]
mod tests;

pub(crate) use route::{port_text, prefix_text, proto_name, Action, FlowRule, Route};

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::addr::Cidr;
use crate::config::{Bgp, Config, FlowAction, Mode};
use crate::detect::{Event, EventKind, Vector};
use crate::event::{self, EventBody};
use crate::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

/// A destination carrying at least this share of a tick's samples is the attacked one.
const DESTINATION_SHARE: f64 = 0.5;
/// After the warm-up and the hold, this long again for a restarted agent to see an ongoing
/// attack again before the routes it found are withdrawn.
const GRACE_MARGIN: Duration = Duration::from_secs(10);

/// One route the BGP daemon should announce, and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Announcement {
    pub(crate) route: Route,
    /// The open incidents that need it; empty while it is held (`min_duration`) or was found
    /// at start and is not claimed yet.
    pub(crate) incidents: Vec<String>,
    /// The vector of the incident that asked for it first (None: found at start).
    pub(crate) vector: Option<&'static str>,
    /// Since when it is wanted (monotonic time since start).
    pub(crate) since: Duration,
    /// Unclaimed, it is withdrawn at this time.
    pub(crate) until: Duration,
    /// The incident that needed it last, once it has ended.
    pub(crate) ended: Option<String>,
}

/// An announcement made or withdrawn (or, in monitor mode, that would have been).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BgpEvent {
    pub(crate) announced: bool,
    pub(crate) route: Route,
    pub(crate) incident: Option<String>,
    pub(crate) vector: Option<&'static str>,
    pub(crate) reason: String,
    pub(crate) monitor: bool,
}

impl BgpEvent {
    /// One JSON line (the schema is in the README, section "Events").
    pub(crate) fn to_json(&self, wall_clock: SystemTime) -> String {
        let (source, proto, port, source_port, fragments, action, rate) = match &self.route {
            Route::Blackhole(_) => (None, None, None, None, false, "blackhole", None),
            Route::FlowSpec(f) => {
                let (action, rate) = match f.action {
                    Action::Discard => ("discard", None),
                    Action::RateLimit(bytes) => ("rate-limit", Some(bytes.saturating_mul(8))),
                };
                (
                    f.source.map(prefix_text),
                    f.proto
                        .map(|p| proto_name(p).map_or_else(|| p.to_string(), str::to_string)),
                    f.dst_ports.map(port_text),
                    f.src_ports.map(port_text),
                    f.fragments,
                    action,
                    rate,
                )
            }
        };
        let line = BgpLine {
            event: if self.announced {
                "bgp_announced"
            } else {
                "bgp_withdrawn"
            },
            incident: self.incident.as_deref(),
            vector: self.vector,
            route: self.route.kind(),
            destination: prefix_text(self.route.destination()),
            source,
            proto,
            port,
            source_port,
            fragments,
            action,
            rate_bps: rate,
            reason: &self.reason,
            monitor: self.monitor,
        };
        event::line(&line, wall_clock)
    }
}

/// A BGP event's fields, in schema order.
#[derive(Serialize)]
struct BgpLine<'a> {
    #[serde(skip)]
    event: &'static str,
    incident: Option<&'a str>,
    vector: Option<&'static str>,
    route: &'static str,
    destination: String,
    source: Option<String>,
    proto: Option<String>,
    port: Option<String>,
    source_port: Option<String>,
    fragments: bool,
    action: &'static str,
    rate_bps: Option<u64>,
    reason: &'a str,
    #[serde(rename = "mode", serialize_with = "event::mode")]
    monitor: bool,
}

impl EventBody for BgpLine<'_> {
    fn name(&self) -> &'static str {
        self.event
    }
}

/// What the planner remembers of an open incident.
#[derive(Debug)]
struct Watch {
    first_seen: Duration,
    destination: Option<IpAddr>,
    escalated: bool,
}

/// Decides the announcements from the incidents of each tick.
#[derive(Debug)]
pub(crate) struct Escalator {
    policy: Bgp,
    monitor: bool,
    min_source_share: f64,
    /// This host's addresses (when `bgp.destinations` is empty, only these are announced).
    own: Vec<IpAddr>,
    /// Sources never named in a FlowSpec rule (the safelist, configured and automatic).
    safelist: Vec<Cidr>,
    watched: HashMap<String, Watch>,
    wanted: Vec<Announcement>,
    /// When routes found at start stop waiting for an incident to claim them.
    grace: Duration,
    /// The routes in the BGP daemon at start are known (announcements wait for that).
    found: bool,
    /// Something to withdraw before the next event comes: the earliest `until`.
    next_due: Option<Duration>,
}

impl Escalator {
    /// `own` are the host's addresses, from which the attacked one is taken.
    pub(crate) fn new(config: &Config, own: Vec<IpAddr>) -> Escalator {
        Escalator {
            policy: config.bgp.clone(),
            monitor: config.mitigation.mode == Mode::Monitor,
            min_source_share: config.mitigation.min_source_share,
            own,
            safelist: Vec::new(),
            watched: HashMap::new(),
            wanted: Vec::new(),
            grace: config.agent.warmup + config.detection.hold + GRACE_MARGIN,
            // Monitor mode asks no daemon: nothing to find.
            found: config.mitigation.mode == Mode::Monitor,
            next_due: None,
        }
    }

    pub(crate) fn is_monitor(&self) -> bool {
        self.monitor
    }

    /// The safelist (configured and automatic): its sources never get a FlowSpec rule.
    pub(crate) fn set_safelist(&mut self, safelist: Vec<Cidr>) {
        self.safelist = safelist;
    }

    /// The announcements wanted now (for `ftagent status`, and for the BGP daemon).
    pub(crate) fn announcements(&self) -> &[Announcement] {
        &self.wanted
    }

    /// Whether the routes found in the BGP daemon at start have been taken in.
    pub(crate) fn ready(&self) -> bool {
        self.found
    }

    /// Whether `plan` has something to do at `now` without an event.
    pub(crate) fn due(&self, now: Duration) -> bool {
        self.next_due.is_some_and(|t| now >= t)
    }

    /// Our routes the BGP daemon announces at start: kept (counted in the limit) while an
    /// incident claims them again before the grace ends, withdrawn after it otherwise.
    pub(crate) fn adopt(&mut self, routes: &[Route], now: Duration) {
        let until = now.max(self.grace);
        for &route in routes {
            if !self.wanted.iter().any(|a| a.route == route) {
                self.wanted.push(Announcement {
                    route,
                    incidents: Vec::new(),
                    vector: None,
                    since: now,
                    until,
                    ended: None,
                });
            }
        }
        self.found = true;
        self.schedule();
    }

    /// This tick's detection events, with the tick's heaviest sampled destinations (and the
    /// samples they are out of): decisions go to `out`. Returns whether the wanted set changed.
    pub(crate) fn plan(
        &mut self,
        events: &[Event],
        destinations: &[(IpAddr, u64)],
        samples: u64,
        now: Duration,
        out: &mut Vec<BgpEvent>,
    ) -> bool {
        let before = out.len();
        let attacked = destinations
            .iter()
            .find(|&&(ip, n)| {
                n as f64 >= samples as f64 * DESTINATION_SHARE && self.may_announce(ip)
            })
            .map(|&(ip, _)| ip);
        for event in events {
            match event.kind {
                EventKind::AttackStart | EventKind::AttackUpdate => {
                    self.observe(event, attacked, now, out)
                }
                EventKind::AttackEnd => self.release(&event.incident, now),
            }
        }
        self.expire(now, out);
        self.schedule();
        out.len() > before
    }

    /// Whether `ip` may be the destination of an announcement.
    fn may_announce(&self, ip: IpAddr) -> bool {
        if self.policy.destinations.is_empty() {
            self.own.contains(&ip) && announceable(ip)
        } else {
            self.policy.destinations.iter().any(|c| c.contains(ip))
        }
    }

    fn observe(
        &mut self,
        event: &Event,
        attacked: Option<IpAddr>,
        now: Duration,
        out: &mut Vec<BgpEvent>,
    ) {
        if !volumetric(event.vector) {
            return;
        }
        let watch = self.watched.entry(event.incident.clone()).or_insert(Watch {
            first_seen: now,
            destination: None,
            escalated: false,
        });
        if watch.destination.is_none() {
            watch.destination = attacked;
        }
        let p = &self.policy;
        let reason = if p.escalate_pps > 0 && event.pps >= p.escalate_pps as f64 {
            format!(
                "{:.0} pps reached bgp.escalate_pps {}",
                event.pps, p.escalate_pps
            )
        } else if p.escalate_bps > 0 && event.bps >= p.escalate_bps as f64 {
            format!(
                "{:.0} bps reached bgp.escalate_bps {}",
                event.bps, p.escalate_bps
            )
        } else if !p.escalate_after.is_zero()
            && now.saturating_sub(watch.first_seen) >= p.escalate_after
            && event.pps >= event.threshold_pps
        {
            format!(
                "still {:.0} pps over its threshold after bgp.escalate_after {}",
                event.pps,
                humantime::format_duration(p.escalate_after)
            )
        } else {
            return;
        };
        let (Some(destination), false, true) = (watch.destination, watch.escalated, self.found)
        else {
            return;
        };
        watch.escalated = true;
        let routes = self.routes(event, destination);
        for route in routes {
            self.want(route, event, &reason, now, out);
        }
    }

    /// The announcements for an incident on `destination`.
    fn routes(&self, event: &Event, destination: IpAddr) -> Vec<Route> {
        let p = &self.policy;
        let dst = Cidr::host(destination);
        let mut routes = Vec::new();
        if p.rtbh {
            routes.push(Route::Blackhole(dst));
        }
        if !p.flowspec {
            return routes;
        }
        let v4 = destination.is_ipv4();
        let proto = match event.proto {
            Some("tcp") => Some(IPPROTO_TCP),
            Some("udp") => Some(IPPROTO_UDP),
            Some("icmp") | Some("icmpv6") => Some(if v4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 }),
            _ => None,
        };
        let reflector = event
            .counter
            .strip_prefix("amp_")
            .and_then(|p| p.parse::<u16>().ok());
        let ports = event.port.map(|p| (p, p)).or(event.port_range);
        let rule = FlowRule {
            destination: dst,
            source: None,
            proto,
            dst_ports: if proto == Some(IPPROTO_TCP) || proto == Some(IPPROTO_UDP) {
                ports
            } else {
                None
            },
            src_ports: reflector.map(|p| (p, p)),
            fragments: event.vector == Vector::FragmentFlood,
            action: match p.action {
                FlowAction::Discard => Action::Discard,
                FlowAction::RateLimit => Action::RateLimit(p.rate_limit_bps / 8),
            },
        };
        let sources: Vec<Cidr> = if event.concentrated {
            event
                .sources
                .iter()
                .filter(|s| s.share >= self.min_source_share && s.addr.is_ipv4() == v4)
                .filter(|s| !self.never_named(s.addr))
                .take(p.flowspec_sources as usize)
                .map(|s| Cidr::host(s.addr))
                .collect()
        } else {
            Vec::new()
        };
        if sources.is_empty() {
            routes.push(Route::FlowSpec(rule));
        }
        for source in sources {
            routes.push(Route::FlowSpec(FlowRule {
                source: Some(source),
                ..rule
            }));
        }
        routes
    }

    /// Whether `source` must never be dropped by a source rule: safelisted, this host's, or
    /// in a range no ban touches.
    fn never_named(&self, source: IpAddr) -> bool {
        self.own.contains(&source) || crate::addr::protected(&self.safelist, &Cidr::host(source))
    }

    /// Claims `route` for the event's incident, announcing it if it is new and the limit
    /// allows.
    fn want(
        &mut self,
        route: Route,
        event: &Event,
        reason: &str,
        now: Duration,
        out: &mut Vec<BgpEvent>,
    ) {
        if let Some(a) = self.wanted.iter_mut().find(|a| a.route == route) {
            if !a.incidents.contains(&event.incident) {
                a.incidents.push(event.incident.clone());
            }
            a.vector.get_or_insert(event.vector.name());
            a.until = a.until.max(now + self.policy.min_duration);
            return;
        }
        if self.wanted.len() >= self.policy.max_announcements as usize {
            log::warn!(
                "{}: not announcing {route}: bgp.max_announcements ({}) reached",
                event.incident,
                self.policy.max_announcements
            );
            return;
        }
        self.wanted.push(Announcement {
            route,
            incidents: vec![event.incident.clone()],
            vector: Some(event.vector.name()),
            since: now,
            until: now + self.policy.min_duration,
            ended: None,
        });
        out.push(BgpEvent {
            announced: true,
            route,
            incident: Some(event.incident.clone()),
            vector: Some(event.vector.name()),
            reason: reason.to_string(),
            monitor: self.monitor,
        });
    }

    /// The incident ended: its announcements lose it (and go once nothing else needs them).
    fn release(&mut self, incident: &str, now: Duration) {
        self.watched.remove(incident);
        for a in &mut self.wanted {
            if let Some(i) = a.incidents.iter().position(|i| i == incident) {
                a.incidents.swap_remove(i);
                a.until = a.until.max(now);
                a.ended = Some(incident.to_string());
            }
        }
    }

    /// Withdraws what no incident needs and whose time is up.
    fn expire(&mut self, now: Duration, out: &mut Vec<BgpEvent>) {
        let monitor = self.monitor;
        self.wanted.retain(|a| {
            let keep = !a.incidents.is_empty() || now < a.until;
            if !keep {
                out.push(BgpEvent {
                    announced: false,
                    route: a.route,
                    incident: a.ended.clone(),
                    vector: a.vector,
                    reason: if a.vector.is_some() {
                        "the incident ended".to_string()
                    } else {
                        "found at start, and no incident claimed it".to_string()
                    },
                    monitor,
                });
            }
            keep
        });
    }

    fn schedule(&mut self) {
        self.next_due = self
            .wanted
            .iter()
            .filter(|a| a.incidents.is_empty())
            .map(|a| a.until)
            .min();
    }

    /// Advances the timers without events (withdrawals whose time has come).
    #[cfg(test)]
    pub(crate) fn tick(&mut self, now: Duration, out: &mut Vec<BgpEvent>) -> bool {
        self.plan(&[], &[], 0, now, out)
    }
}

/// Vectors whose volume can fill a link; connection-level attacks (HTTP floods, Slowloris)
/// are left to local mitigation, where they are told apart from real clients.
fn volumetric(vector: Vector) -> bool {
    !matches!(
        vector,
        Vector::HttpFlood | Vector::Slowloris | Vector::TcpConnectionFlood
    )
}

/// An address a route may be announced for: not loopback, link-local, multicast or
/// unspecified.
fn announceable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_unspecified()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_multicast()
                || a.is_unspecified()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}
