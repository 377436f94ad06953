//! Sensing: per-tick samples built from kernel aggregates — nft counters, sampled NFLOG
//! packets and conntrack — in fixed-size structures that allocate nothing once running.
//! [`Sensor`] holds them all; the daemon feeds it and the detector reads it.

pub(crate) mod connections;
pub(crate) mod counters;
pub(crate) mod hll;
pub(crate) mod recent;
pub(crate) mod talkers;
pub(crate) mod trace;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::config::{Config, Proto};
use crate::netlink::nflog::PacketMeta;
use crate::proto::{IPPROTO_TCP, IPPROTO_UDP};
use connections::ConnectionTable;
use counters::{CounterLayout, CounterRates, Rate, Reading};
use recent::{Recent, Window};
use talkers::Talkers;

/// Entries of each top list handed to the detector (and the sources and prefixes an incident
/// lists).
pub(crate) const TOP: usize = 5;
const NO_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// What one tick gives the detector, borrowed from the sensor: building it allocates nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample<'a> {
    /// Per counter, indexed like the [`CounterLayout`] (packets and bits per second).
    pub(crate) rates: &'a [Rate],
    /// Packets sampled this tick.
    pub(crate) samples: u64,
    /// The sampled packets of about the last second, whole (each incident's sources and
    /// targets are counted over its own).
    pub(crate) packets: Window<'a>,
    /// Heaviest sampled (IP protocol, destination port) pairs of this tick first.
    pub(crate) top_dst_ports: &'a [((u8, u16), u64)],
    /// Concurrent connections to service ports per source, heaviest first (last conntrack
    /// read).
    pub(crate) connections: &'a [(IpAddr, u32)],
    /// Concurrent connections per configured service, indexed like `CounterLayout::services`
    /// (last conntrack read); may be empty. Tells which service a source's excess of
    /// connections is on (Slowloris on a web port, or a connection flood elsewhere).
    pub(crate) service_connections: &'a [u32],
}

/// The top lists of the current tick, copied out of the summaries for the detector (fixed
/// arrays: filling them allocates nothing).
#[derive(Debug)]
struct TopLists {
    ports: [((u8, u16), u64); TOP],
    connections: [(IpAddr, u32); TOP],
    counts: [usize; 2],
}

/// Keys tracked per top-k table of sampled packets.
const TALKER_CAPACITY: usize = 64;
/// Sources tracked per connection-table round.
const CONNECTION_SOURCES: usize = 4096;
/// Sampled packets kept whole for the detector: a second at the default sampling rate (2000
/// a second, bursts of 200), with room to spare.
pub(crate) const RECENT_PACKETS: usize = 4096;
/// How far back the kept packets go.
const RECENT_SPAN: Duration = Duration::from_secs(1);

/// NFLOG delivery, cumulative since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SampleLoss {
    pub(crate) received: u64,
    /// Packets the kernel could not deliver (sequence gaps).
    pub(crate) lost: u64,
    /// Times the receive buffer overflowed.
    pub(crate) enobufs: u64,
    /// Messages or packets that could not be parsed.
    pub(crate) malformed: u64,
}

/// Everything the agent knows about current traffic.
#[derive(Debug)]
pub(crate) struct Sensor {
    pub(crate) counters: CounterRates,
    /// Samples of the current tick.
    pub(crate) tick: Talkers,
    /// Samples of the current trace window (one second).
    pub(crate) window: Talkers,
    /// The sampled packets of the last second, whole: each incident's own (detector).
    pub(crate) recent: Recent,
    /// Concurrent connections per source to service ports, from the last conntrack read.
    pub(crate) connections: ConnectionTable,
    /// Conntrack entries of the namespace at the last read.
    pub(crate) conntrack_entries: u64,
    pub(crate) loss: SampleLoss,
    /// Concurrent connections per configured service (indexed like the layout's services),
    /// from the last conntrack read.
    pub(crate) service_connections: Vec<u32>,
    top: TopLists,
    /// Counter totals at the start of the trace window.
    window_base: Vec<Reading>,
    window_start: Option<Instant>,
}

impl Sensor {
    pub(crate) fn new(config: &Config) -> Sensor {
        let layout = CounterLayout::new(config);
        let ranges = |proto| -> Vec<(u16, u16)> {
            config
                .services
                .iter()
                .filter(|s| s.proto == proto)
                .map(|s| (s.ports.first, s.ports.last))
                .collect()
        };
        let n = layout.len();
        Sensor {
            counters: CounterRates::new(layout),
            tick: Talkers::new(TALKER_CAPACITY),
            window: Talkers::new(TALKER_CAPACITY),
            recent: Recent::new(RECENT_PACKETS, recent_ticks(config.agent.tick)),
            connections: ConnectionTable::new(
                &ranges(Proto::Tcp),
                &ranges(Proto::Udp),
                CONNECTION_SOURCES,
            ),
            conntrack_entries: 0,
            loss: SampleLoss::default(),
            service_connections: vec![0; config.services.len()],
            top: TopLists {
                ports: [((0, 0), 0); TOP],
                connections: [(NO_ADDR, 0); TOP],
                counts: [0; 2],
            },
            window_base: vec![Reading::default(); n],
            window_start: None,
        }
    }

    /// One sampled packet.
    pub(crate) fn packet(&mut self, p: &PacketMeta) {
        self.tick.record(p);
        self.window.record(p);
        self.recent.push(p);
    }

    /// After a conntrack read: the connections per configured service.
    pub(crate) fn count_service_connections(&mut self) {
        let layout = self.counters.layout();
        for (slot, svc) in self.service_connections.iter_mut().zip(&layout.services) {
            let proto = match svc.proto {
                Proto::Tcp => IPPROTO_TCP,
                Proto::Udp => IPPROTO_UDP,
            };
            *slot = (svc.first..=svc.last)
                .map(|p| self.connections.per_port(proto, p))
                .sum();
        }
    }

    /// This tick as the detector sees it. Allocates nothing.
    pub(crate) fn sample(&mut self) -> Sample<'_> {
        let top = &mut self.top;
        top.counts = [
            self.tick.top_dst_ports(&mut top.ports),
            self.connections.top_sources(&mut top.connections),
        ];
        Sample {
            rates: self.counters.rates(),
            samples: self.tick.samples(),
            packets: self.recent.window(),
            top_dst_ports: &top.ports[..top.counts[0]],
            connections: &top.connections[..top.counts[1]],
            service_connections: &self.service_connections,
        }
    }

    /// Starts the next tick's samples.
    pub(crate) fn next_tick(&mut self) {
        self.tick.reset();
        self.recent.next_tick();
    }

    /// Starts a new trace window at `now`, returning when the previous one started.
    fn next_window(&mut self, now: Instant) -> Option<Instant> {
        for (i, base) in self.window_base.iter_mut().enumerate() {
            *base = self.counters.total(i);
        }
        self.window.reset();
        self.window_start.replace(now)
    }
}

/// Ticks of `tick` that make up [`RECENT_SPAN`].
fn recent_ticks(tick: Duration) -> usize {
    let ticks = RECENT_SPAN.as_secs_f64() / tick.as_secs_f64().max(1e-3);
    (ticks.ceil() as usize).clamp(1, 100)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::alloc::thread_allocations;
    use crate::netlink::conntrack::{self, DumpStats, Entry};
    use crate::netlink::nflog::{self, DrainStats, SeqTracker};
    use crate::netlink::nft;
    use crate::netlink::wire::{Msgs, Writer};

    /// A GETOBJ dump reply: one NEWOBJ message per counter of the table.
    fn counter_dump(names: &[String], tick: u64) -> Vec<u8> {
        let mut w = Writer::new();
        for (i, name) in names.iter().enumerate() {
            w.begin((10 << 8) | 18, 0x2, 7, 1, 0);
            w.attr_str(1, crate::ruleset::TABLE);
            w.attr_str(2, name);
            w.attr_be32(3, 1);
            let data = w.nest_start(4);
            w.attr_be64(1, tick * 6000 * (i as u64 + 1));
            w.attr_be64(2, tick * 100 * (i as u64 + 1));
            w.nest_end(data).unwrap();
            w.end();
        }
        w.bytes().to_vec()
    }

    /// An NFLOG datagram of 64 sampled UDP packets from changing sources.
    fn nflog_datagram(tick: u32, first_seq: u32) -> Vec<u8> {
        let mut w = Writer::new();
        for i in 0..64u32 {
            let src = Ipv4Addr::from(0x0afa_0000 + (tick * 64 + i) % 5000);
            let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&[10, 250, 0, 2]);
            ip.extend_from_slice(&[0x9c, 0x40, 0x69, 0x87, 0, 8, 0, 0]);
            nflog::tests::nflog_msg(
                &mut w,
                libc::AF_INET as u8,
                0x0800,
                Some(first_seq + i),
                &ip,
            );
        }
        w.bytes().to_vec()
    }

    /// Issue 3: after warm-up, a tick — counters decoded from a netlink dump and turned into
    /// rates, 64 sampled packets walked and summarised, a conntrack dump of 500 entries walked
    /// and aggregated — makes no heap allocation.
    #[test]
    fn issue3_a_tick_allocates_nothing_in_steady_state() {
        let config = Config::default();
        let mut sensor = Sensor::new(&config);
        let names: Vec<String> = crate::ruleset::desired(&config).counters;
        let dumps: Vec<Vec<u8>> = (0..8).map(|t| counter_dump(&names, t)).collect();
        let samples: Vec<Vec<u8>> = (0..8).map(|t| nflog_datagram(t, t * 64)).collect();
        let mut ct = Writer::new();
        for i in 0..500u32 {
            let e = Entry {
                src: IpAddr::V4(Ipv4Addr::from(0x0afa_0000 + i % 50)),
                dst: IpAddr::V4(Ipv4Addr::new(10, 250, 0, 2)),
                proto: 6,
                src_port: Some(40000 + i as u16),
                dst_port: Some(22),
                tcp_state: Some(3),
            };
            conntrack::tests::encode_entry(&mut ct, 0x2, 9, &e);
        }
        let mut seqs = SeqTracker::fresh();
        let mut nflog_stats = DrainStats::default();
        let t0 = Instant::now();
        let mut tick = |sensor: &mut Sensor, n: u64| {
            sensor.counters.begin();
            for msg in Msgs::new(&dumps[(n % 8) as usize]).flatten() {
                if let Some((name, packets, bytes)) = nft::decode_counter(&msg) {
                    sensor
                        .counters
                        .record(name, packets + n * 1000, bytes + n * 64_000);
                }
            }
            let _ = sensor.counters.finish(t0 + Duration::from_millis(100 * n));
            let datagram = &samples[(n % 8) as usize];
            nflog::walk(datagram, &mut seqs, &mut nflog_stats, &mut |p, _| {
                sensor.packet(p)
            });
            sensor.connections.begin();
            let mut ct_stats = DumpStats::default();
            let table = &mut sensor.connections;
            let _ = conntrack::walk_dump(ct.bytes(), 9, &mut ct_stats, &mut |e| {
                table.add(e);
            });
            sensor.next_tick();
        };
        for n in 0..50 {
            tick(&mut sensor, n);
        }
        let before = thread_allocations();
        for n in 50..2050 {
            tick(&mut sensor, n);
        }
        assert_eq!(
            thread_allocations() - before,
            0,
            "allocations in 2000 ticks"
        );
        assert_eq!(
            sensor
                .connections
                .top_sources(&mut [(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0); 1]),
            1
        );
        assert!(sensor.counters.rate(counters::class::TCP).pps > 0.0);
        assert!(nflog_stats.packets > 100_000 && nflog_stats.malformed == 0);
    }
}
