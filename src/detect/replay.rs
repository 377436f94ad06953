//! Synthetic traces for replay tests: traffic described as flows (legitimate connections, SYN
//! floods, reflected UDP…), each adding to the counters the way the table's rules count it,
//! with Poisson-like noise; sampled packets in proportion, each with its addresses, ports and
//! flags, kept for a second as the sensor keeps them; connection counts set by hand; a clock
//! stepping one tick at a time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::{Detector, Event, EventKind, Sample};
use crate::alloc::thread_allocations;
use crate::config::{Config, Proto};
use crate::netlink::nflog::PacketMeta;
use crate::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use crate::ruleset::{amplification_counter, Counter};
use crate::sense::counters::{CounterLayout, Rate};
use crate::sense::recent::Recent;

/// The server's address: where flows go unless told otherwise.
pub(crate) const SERVER: &str = "198.51.100.10";

/// What a flow sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// Complete TCP connections to `port`; the flow's rate is connections per second, each
    /// `packets` packets: one SYN, one FIN, the rest ACKs (data included).
    Connections {
        port: u16,
        packets: f64,
    },
    /// SYNs to `port` (None: random high ports).
    Syn {
        port: Option<u16>,
    },
    /// ACKs outside any connection (spoofed).
    Ack {
        port: Option<u16>,
    },
    /// ACKs (with payload) in established connections to `port`: a keep-alive HTTP flood.
    EstablishedAck {
        port: u16,
    },
    /// The same from a banned source: the ban drops them before conntrack, so only the
    /// prerouting counters count them (no new connection, no established ACK).
    BannedAck {
        port: u16,
    },
    /// SYN-ACKs to SYNs we never sent, to random high ports.
    SynAck,
    /// TCP with none of SYN, RST and ACK (xmas, null, FIN) to `port`.
    OddFlags {
        port: Option<u16>,
    },
    /// Another IP protocol (47: GRE…).
    IpProto(u8),
    Rst {
        port: Option<u16>,
    },
    Udp {
        port: Option<u16>,
    },
    /// UDP from a reflector's source port to random high ports.
    Amp {
        src_port: u16,
    },
    Icmp,
    Icmp6,
    /// IPv4 fragments of UDP datagrams to random ports (a third are first fragments).
    Fragments,
}

/// Who sends it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sources {
    /// These addresses, evenly.
    Few(Vec<IpAddr>),
    /// `count` addresses from `first` upwards, evenly (spoofed or a botnet).
    Many { first: Ipv4Addr, count: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Flow {
    pub(crate) kind: Kind,
    /// Packets per second (connections per second for `Connections`).
    pub(crate) rate: f64,
    /// Bytes per packet.
    pub(crate) size: f64,
    pub(crate) sources: Sources,
    /// The local addresses it goes to.
    pub(crate) targets: Sources,
}

impl Flow {
    pub(crate) fn new(kind: Kind, rate: f64) -> Flow {
        Flow {
            kind,
            rate,
            size: 60.0,
            sources: Sources::Many {
                first: Ipv4Addr::new(100, 64, 0, 0),
                count: 50_000,
            },
            targets: few(&[SERVER]),
        }
    }

    pub(crate) fn size(mut self, bytes: f64) -> Flow {
        self.size = bytes;
        self
    }

    pub(crate) fn from(mut self, sources: Sources) -> Flow {
        self.sources = sources;
        self
    }

    pub(crate) fn to(mut self, targets: Sources) -> Flow {
        self.targets = targets;
        self
    }

    pub(crate) fn scaled(&self, factor: f64) -> Flow {
        Flow {
            rate: self.rate * factor,
            ..self.clone()
        }
    }

    /// Packets per second this flow puts on the wire.
    fn packets(&self) -> f64 {
        match self.kind {
            Kind::Connections { packets, .. } => self.rate * packets,
            _ => self.rate,
        }
    }
}

pub(crate) fn few(addrs: &[&str]) -> Sources {
    Sources::Few(addrs.iter().map(|a| a.parse().unwrap()).collect())
}

pub(crate) fn many(first: [u8; 4], count: u32) -> Sources {
    Sources::Many {
        first: Ipv4Addr::from(first),
        count,
    }
}

/// A busy but ordinary server: web clients on 443 and 80, a little SSH, its own DNS and NTP
/// lookups, pings, scanners.
pub(crate) fn background() -> Vec<Flow> {
    let clients = many([198, 18, 0, 0], 20_000);
    vec![
        Flow::new(
            Kind::Connections {
                port: 443,
                packets: 12.0,
            },
            150.0,
        )
        .size(700.0)
        .from(clients.clone()),
        Flow::new(
            Kind::Connections {
                port: 80,
                packets: 10.0,
            },
            30.0,
        )
        .size(500.0)
        .from(clients),
        Flow::new(
            Kind::Connections {
                port: 22,
                packets: 40.0,
            },
            0.2,
        )
        .size(200.0)
        .from(few(&["192.0.2.10"])),
        Flow::new(Kind::Amp { src_port: 53 }, 30.0)
            .size(120.0)
            .from(few(&["192.0.2.53", "192.0.2.54"])),
        Flow::new(Kind::Amp { src_port: 123 }, 0.5).from(few(&["192.0.2.123"])),
        Flow::new(Kind::Icmp, 3.0).from(many([203, 0, 113, 0], 200)),
        Flow::new(Kind::Udp { port: None }, 20.0).from(many([203, 0, 113, 0], 200)),
        Flow::new(Kind::Syn { port: None }, 15.0).from(many([45, 0, 0, 0], 5000)),
        Flow::new(Kind::Rst { port: None }, 5.0).from(many([45, 0, 0, 0], 5000)),
        Flow::new(Kind::Fragments, 1.0),
    ]
}

/// A detector fed tick by tick from flows.
pub(crate) struct Replay {
    pub(crate) config: Config,
    pub(crate) layout: CounterLayout,
    pub(crate) detector: Detector,
    /// Time of the last tick.
    pub(crate) now: Duration,
    pub(crate) tick: Duration,
    /// Every event so far with the time of its tick.
    pub(crate) events: Vec<(Duration, Event)>,
    /// Ticks so far.
    pub(crate) ticks: u64,
    /// Concurrent connections per source and per service, as the last conntrack read says.
    pub(crate) connections: Vec<(IpAddr, u32)>,
    pub(crate) service_connections: Vec<u32>,
    /// Per-tick noise like a Poisson process (on by default).
    pub(crate) noise: bool,
    /// Allocations inside `observe` on ticks that produced no event.
    pub(crate) quiet_allocations: u64,
    /// The sampled packets of the last second.
    recent: Recent,
    rng: u64,
    /// The sampler's own randomness (the counters' noise stays as it was).
    sampler: u64,
}

impl Replay {
    pub(crate) fn new(config: Config) -> Replay {
        let layout = CounterLayout::new(&config);
        let detector = Detector::new(&config, &layout);
        let services = layout.services.len();
        Replay {
            now: Duration::ZERO,
            events: Vec::new(),
            ticks: 0,
            connections: Vec::new(),
            service_connections: vec![0; services],
            noise: true,
            quiet_allocations: 0,
            recent: Recent::new(
                crate::sense::RECENT_PACKETS,
                (1.0 / config.agent.tick.as_secs_f64()).ceil() as usize,
            ),
            tick: config.agent.tick,
            config,
            layout,
            detector,
            rng: 0x9e37_79b9_7f4a_7c15,
            sampler: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// The default configuration, changed by `change`.
    pub(crate) fn with(change: impl FnOnce(&mut Config)) -> Replay {
        let mut config = Config::default();
        change(&mut config);
        Replay::new(config)
    }

    /// A new detector on the same configuration, its clock starting again at zero (a restart).
    pub(crate) fn restart(&mut self) {
        self.detector = Detector::new(&self.config, &self.layout);
        self.now = Duration::ZERO;
    }

    /// Runs `seconds` of `flows`; returns the events of these ticks.
    pub(crate) fn run(&mut self, seconds: f64, flows: &[Flow]) -> Vec<(Duration, Event)> {
        let first = self.events.len();
        let end = self.now + Duration::from_secs_f64(seconds);
        while self.now + END_SLACK < end {
            self.step(flows);
        }
        self.events[first..].to_vec()
    }

    /// Runs `seconds`, asking `flows` for the traffic at each moment (seconds from the start
    /// of this run: the middle of each slice of `SLICE` or so): a flood may begin and end
    /// inside a tick.
    pub(crate) fn run_with(
        &mut self,
        seconds: f64,
        mut flows: impl FnMut(f64) -> Vec<Flow>,
    ) -> Vec<(Duration, Event)> {
        let first = self.events.len();
        let start = self.now;
        let end = start + Duration::from_secs_f64(seconds);
        while self.now + END_SLACK < end {
            let dt = self.next_dt();
            let at = (self.now - start).as_secs_f64();
            let slices = ((dt / SLICE).round() as usize).clamp(1, MAX_SLICES);
            let traffic: Vec<(f64, Vec<Flow>)> = (1..=slices)
                .map(|i| {
                    let middle = dt * (i as f64 - 0.5) / slices as f64;
                    (dt / slices as f64, flows(at + middle))
                })
                .collect();
            self.advance(dt, &traffic);
        }
        self.events[first..].to_vec()
    }

    /// One tick of `flows`, as long as the detector asks (`agent.tick`, or a fast tick).
    pub(crate) fn step(&mut self, flows: &[Flow]) -> Vec<Event> {
        let dt = self.next_dt();
        self.advance(dt, &[(dt, flows.to_vec())])
    }

    /// The length of the next tick: a fast one when the detector asks for it, as the daemon
    /// does.
    fn next_dt(&self) -> f64 {
        self.detector.fast_tick().unwrap_or(self.tick).as_secs_f64()
    }

    /// One tick of `dt` seconds, made of slices (their length and traffic).
    fn advance(&mut self, dt: f64, slices: &[(f64, Vec<Flow>)]) -> Vec<Event> {
        self.now += Duration::from_secs_f64(dt);
        self.ticks += 1;
        let mut rates = vec![Rate::default(); self.layout.len()];
        let mut wire: Vec<(f64, &Flow)> = Vec::new();
        for (length, flows) in slices {
            let share = length / dt;
            for flow in flows {
                let factor = self.noise_factor(flow.packets() * length) * share;
                self.count(flow, factor, &mut rates);
                // The sampler (prerouting, after reassembly) never sees a fragment.
                if flow.kind != Kind::Fragments {
                    wire.push((flow.packets() * factor, flow));
                }
            }
        }
        let total: f64 = wire.iter().map(|w| w.0).sum();
        let sample_rate = f64::from(self.config.sense.sample_rate);
        let samples = total.min(sample_rate) * dt;
        let mut ports: BTreeMap<(u8, u16), u64> = BTreeMap::new();
        let mut sampled = 0;
        for (pps, flow) in &wire {
            let share = if total > 0.0 {
                samples * pps / total
            } else {
                0.0
            };
            let n = share.floor() as u64 + u64::from(self.draw() < share.fract());
            for _ in 0..n {
                let p = self.packet(flow);
                // As the sensor does: other protocols, which have no ports, as port 0.
                if let Some(port) = p.dst_port.or((!p.fragment).then_some(0)) {
                    *ports.entry((p.proto, port)).or_default() += 1;
                }
                self.recent.push(&p);
            }
            sampled += n;
        }
        let top_dst_ports = heaviest(ports);
        let sample = Sample {
            rates: &rates,
            samples: sampled,
            packets: self.recent.window(),
            top_dst_ports: &top_dst_ports,
            connections: &self.connections,
            service_connections: &self.service_connections,
        };
        let mut out = Vec::with_capacity(8);
        let before = thread_allocations();
        self.detector.observe(&sample, self.now, &mut out);
        let made = thread_allocations() - before;
        if out.is_empty() {
            self.quiet_allocations += made;
        }
        self.recent.next_tick();
        for e in &out {
            self.events.push((self.now, e.clone()));
        }
        out
    }

    /// One sampled packet of `flow`: a random one of its sources and targets, its ports and
    /// flags (a connection's packets: one SYN, one FIN, the rest ACKs).
    fn packet(&mut self, flow: &Flow) -> PacketMeta {
        let src = self.pick(&flow.sources);
        let dst = self.pick(&flow.targets);
        let high = 1024 + (self.draw() * 64_000.0) as u16;
        let tcp =
            |port: Option<u16>, flags: u8| (IPPROTO_TCP, Some(port.unwrap_or(high)), Some(flags));
        let (proto, dst_port, tcp_flags) = match flow.kind {
            Kind::Connections { port, packets } => {
                let at = self.draw() * packets.max(2.0);
                let flags = if at < 1.0 {
                    0x02
                } else if at < 2.0 {
                    0x11
                } else {
                    0x18
                };
                tcp(Some(port), flags)
            }
            Kind::Syn { port } => tcp(port, 0x02),
            Kind::Ack { port } => tcp(port, 0x10),
            Kind::EstablishedAck { port } | Kind::BannedAck { port } => tcp(Some(port), 0x18),
            Kind::SynAck => tcp(None, 0x12),
            Kind::OddFlags { port } => tcp(port, 0x29),
            Kind::IpProto(proto) => (proto, None, None),
            Kind::Rst { port } => tcp(port, 0x04),
            Kind::Udp { port } => (IPPROTO_UDP, Some(port.unwrap_or(high)), None),
            Kind::Amp { .. } => (IPPROTO_UDP, Some(high), None),
            Kind::Icmp => (IPPROTO_ICMP, Some(8 << 8), None),
            Kind::Icmp6 => (IPPROTO_ICMPV6, Some(128 << 8), None),
            Kind::Fragments => (IPPROTO_UDP, None, None),
        };
        let src_port = match flow.kind {
            Kind::Amp { src_port } => Some(src_port),
            Kind::Icmp | Kind::Icmp6 | Kind::Fragments | Kind::IpProto(_) => None,
            _ => Some(high.wrapping_add(7)),
        };
        PacketMeta {
            src,
            dst,
            proto,
            src_port,
            dst_port,
            len: flow.size.clamp(20.0, 65535.0) as u16,
            ttl: 57,
            tcp_flags,
            fragment: flow.kind == Kind::Fragments,
        }
    }

    /// One address of `sources`, at random.
    fn pick(&mut self, sources: &Sources) -> IpAddr {
        match sources {
            Sources::Few(addrs) => {
                let i = (self.draw() * addrs.len() as f64) as usize;
                addrs[i.min(addrs.len() - 1)]
            }
            Sources::Many { first, count } => {
                let i = (self.draw() * f64::from(*count)) as u32;
                IpAddr::V4(Ipv4Addr::from(u32::from(*first) + i.min(count - 1)))
            }
        }
    }

    /// The sampler's uniform draw in [0, 1).
    fn draw(&mut self) -> f64 {
        xorshift(&mut self.sampler)
    }

    /// Adds what `flow` sends this tick (times `factor`) to the counters that count it.
    fn count(&self, flow: &Flow, factor: f64, rates: &mut [Rate]) {
        let mut add = |name: &str, pps: f64, size: f64| {
            if let Some(i) = self.layout.index(name) {
                rates[i].pps += pps * factor;
                rates[i].bps += pps * factor * size * 8.0;
            }
        };
        let size = flow.size;
        let r = flow.rate;
        let service = |proto: Proto, port: u16| self.layout.service(proto, port);
        // Destination-port counters of a TCP or UDP flow.
        let to_port =
            |add: &mut dyn FnMut(&str, f64, f64), proto, port: Option<u16>, new| match port
                .and_then(|p| service(proto, p))
            {
                Some(s) => {
                    add(self.layout.name(s.packets), r, size);
                    add(self.layout.name(s.new), r * new, size);
                }
                None => add(Counter::Other.name(), r, size),
            };
        match flow.kind {
            Kind::Connections { port, packets } => {
                let p = r * packets;
                add(Counter::Ipv4.name(), p, size);
                add(Counter::Tcp.name(), p, size);
                add(Counter::TcpSyn.name(), r, 60.0);
                add(Counter::TcpAck.name(), r * (packets - 2.0).max(0.0), size);
                add(
                    Counter::TcpAckEst.name(),
                    r * (packets - 2.0).max(0.0),
                    size,
                );
                match service(Proto::Tcp, port) {
                    Some(s) => {
                        add(self.layout.name(s.packets), p, size);
                        add(self.layout.name(s.new), r, 60.0);
                    }
                    None => add(Counter::Other.name(), p, size),
                }
            }
            Kind::Syn { port } | Kind::Ack { port } | Kind::Rst { port } => {
                add(Counter::Ipv4.name(), r, size);
                add(Counter::Tcp.name(), r, size);
                let (flag, new) = match flow.kind {
                    Kind::Syn { .. } => (Counter::TcpSyn.name(), 1.0),
                    // conntrack picks up mid-stream ACKs as new connections (tcp_loose).
                    Kind::Ack { .. } => (Counter::TcpAck.name(), 1.0),
                    _ => (Counter::TcpRst.name(), 0.0),
                };
                add(flag, r, size);
                to_port(&mut add, Proto::Tcp, port, new);
            }
            Kind::EstablishedAck { port } => {
                add(Counter::Ipv4.name(), r, size);
                add(Counter::Tcp.name(), r, size);
                add(Counter::TcpAck.name(), r, size);
                add(Counter::TcpAckEst.name(), r, size);
                to_port(&mut add, Proto::Tcp, Some(port), 0.0);
            }
            Kind::BannedAck { port } => {
                add(Counter::Ipv4.name(), r, size);
                add(Counter::Tcp.name(), r, size);
                add(Counter::TcpAck.name(), r, size);
                to_port(&mut add, Proto::Tcp, Some(port), 0.0);
            }
            Kind::SynAck | Kind::OddFlags { .. } => {
                add(Counter::Ipv4.name(), r, size);
                add(Counter::Tcp.name(), r, size);
                let (flag, port) = match flow.kind {
                    Kind::OddFlags { port } => (Counter::TcpOdd.name(), port),
                    _ => (Counter::TcpSynack.name(), None),
                };
                add(flag, r, size);
                // conntrack finds them invalid: no new connection.
                to_port(&mut add, Proto::Tcp, port, 0.0);
            }
            Kind::IpProto(_) => {
                add(Counter::Ipv4.name(), r, size);
                add(Counter::L4Other.name(), r, size);
            }
            Kind::Udp { port } => {
                add(Counter::Ipv4.name(), r, size);
                add(Counter::Udp.name(), r, size);
                to_port(&mut add, Proto::Udp, port, 1.0);
            }
            Kind::Amp { src_port } => {
                add(Counter::Ipv4.name(), r, size);
                add(Counter::Udp.name(), r, size);
                let name = amplification_counter(src_port);
                if self.layout.index(&name).is_some() {
                    add(&name, r, size);
                } else {
                    add(Counter::Other.name(), r, size);
                }
            }
            Kind::Icmp => {
                add(Counter::Ipv4.name(), r, size);
                add(Counter::Icmp.name(), r, size);
            }
            Kind::Icmp6 => {
                add(Counter::Ipv6.name(), r, size);
                add(Counter::Icmpv6.name(), r, size);
            }
            // Counted in the early chain, before reassembly; fragments that never complete
            // never reach the prerouting chain's counters.
            Kind::Fragments => add(Counter::Fragment.name(), r, size),
        }
    }

    /// A factor around 1 with the spread of a Poisson count of `expected` events.
    fn noise_factor(&mut self, expected: f64) -> f64 {
        if !self.noise || expected <= 0.0 {
            return 1.0;
        }
        // Sum of four uniforms: close enough to a normal with σ = 1.
        let mut g = 0.0;
        for _ in 0..4 {
            g += self.uniform() - 0.5;
        }
        g *= 3f64.sqrt();
        (1.0 + g / expected.sqrt()).max(0.0)
    }

    fn uniform(&mut self) -> f64 {
        xorshift(&mut self.rng)
    }

    /// The events of one kind so far.
    pub(crate) fn of_kind(&self, kind: EventKind) -> Vec<&(Duration, Event)> {
        self.events.iter().filter(|(_, e)| e.kind == kind).collect()
    }

    /// Checks what must hold of every trace: each incident starts once, first; updates come at
    /// least a second apart; an end, if any, comes last.
    pub(crate) fn check_invariants(&self) {
        let mut ids: Vec<&str> = self
            .events
            .iter()
            .map(|(_, e)| e.incident.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let mine: Vec<&(Duration, Event)> = self
                .events
                .iter()
                .filter(|(_, e)| e.incident == id)
                .collect();
            assert_eq!(mine[0].1.kind, EventKind::AttackStart, "{id} starts first");
            let starts = mine
                .iter()
                .filter(|(_, e)| e.kind == EventKind::AttackStart);
            assert_eq!(starts.count(), 1, "{id} starts once");
            let ends = mine
                .iter()
                .filter(|(_, e)| e.kind == EventKind::AttackEnd)
                .count();
            assert!(ends <= 1, "{id} ends at most once");
            if ends == 1 {
                assert_eq!(mine.last().unwrap().1.kind, EventKind::AttackEnd);
            }
            let reports: Vec<Duration> = mine
                .iter()
                .filter(|(_, e)| e.kind != EventKind::AttackEnd)
                .map(|(t, _)| *t)
                .collect();
            for pair in reports.windows(2) {
                assert!(
                    pair[1] - pair[0] >= Duration::from_millis(999),
                    "{id}: reports {:?} and {:?} less than a second apart",
                    pair[0],
                    pair[1]
                );
            }
            assert!(mine.iter().all(|(_, e)| e.vector == mine[0].1.vector));
        }
    }
}

/// xorshift64*: a uniform draw in [0, 1) from `state`.
/// How often `run_with` asks for the traffic inside a tick (seconds), and at most how many
/// times a tick.
const SLICE: f64 = 0.005;
const MAX_SLICES: usize = 20;
/// A run ends at its last tick that begins this much before its end.
const END_SLACK: Duration = Duration::from_micros(100);

fn xorshift(state: &mut u64) -> f64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
}

/// Entries heaviest first, at most 64 (a top-k table's size).
fn heaviest<K: Copy>(map: BTreeMap<K, u64>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = map.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.truncate(64);
    v
}
