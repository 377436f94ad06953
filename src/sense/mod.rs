//! Sensing: per-tick samples built from kernel aggregates — nft counters, sampled NFLOG
//! packets and conntrack — in fixed-size structures that allocate nothing once running.
//! [`Sensor`] holds them all; the daemon feeds it and the detector reads it.

pub mod connections;
pub mod counters;
pub mod hll;
pub mod talkers;
pub mod trace;

use std::time::Instant;

use crate::config::{Config, Proto};
use connections::ConnectionTable;
use counters::{CounterLayout, CounterRates, Reading};
use talkers::{PacketMeta, Talkers};

/// Keys tracked per top-k table of sampled packets.
const TALKER_CAPACITY: usize = 64;
/// Sources tracked per connection-table round.
const CONNECTION_SOURCES: usize = 4096;

/// NFLOG delivery, cumulative since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleLoss {
    pub received: u64,
    /// Packets the kernel could not deliver (sequence gaps).
    pub lost: u64,
    /// Times the receive buffer overflowed.
    pub enobufs: u64,
    /// Messages or packets that could not be parsed.
    pub malformed: u64,
}

/// Everything the agent knows about current traffic.
#[derive(Debug)]
pub struct Sensor {
    pub counters: CounterRates,
    /// Samples of the current tick.
    pub tick: Talkers,
    /// Samples of the current trace window (one second).
    pub window: Talkers,
    /// Concurrent connections per source to service ports, from the last conntrack read.
    pub connections: ConnectionTable,
    /// Conntrack entries of the namespace at the last read.
    pub conntrack_entries: u64,
    pub loss: SampleLoss,
    /// Counter totals at the start of the trace window.
    window_base: Vec<Reading>,
    window_start: Option<Instant>,
}

impl Sensor {
    pub fn new(config: &Config) -> Sensor {
        let layout = CounterLayout::new(config);
        let ranges = |proto| -> Vec<(u16, u16)> {
            config.services.iter().filter(|s| s.proto == proto).map(|s| (s.ports.first, s.ports.last)).collect()
        };
        let n = layout.len();
        Sensor {
            counters: CounterRates::new(layout),
            tick: Talkers::new(TALKER_CAPACITY),
            window: Talkers::new(TALKER_CAPACITY),
            connections: ConnectionTable::new(&ranges(Proto::Tcp), &ranges(Proto::Udp), CONNECTION_SOURCES),
            conntrack_entries: 0,
            loss: SampleLoss::default(),
            window_base: vec![Reading::default(); n],
            window_start: None,
        }
    }

    /// One sampled packet.
    pub fn packet(&mut self, p: &PacketMeta) {
        self.tick.record(p);
        self.window.record(p);
    }

    /// Starts the next tick's samples.
    pub fn next_tick(&mut self) {
        self.tick.reset();
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
