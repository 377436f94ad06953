//! The table's named counters, read once per tick, turned into rates. Which counter is which
//! is fixed at start (`CounterLayout`); a tick only writes into arrays allocated then. Totals
//! stay monotonic when the kernel's counters restart (our table replaced or restored). The
//! drop rules' counters come last: read and totalled alike, never detection keys.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::{Config, Proto};
use crate::ruleset::{amplification_counter, drop_counter, service_counter, Counter, DROP_SETS};

/// A configured service port (range) and the indices of its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceCounters {
    pub(crate) proto: Proto,
    pub(crate) first: u16,
    pub(crate) last: u16,
    /// Packets to the port.
    pub(crate) packets: usize,
    /// New connections to the port (`ct state new` packets).
    pub(crate) new: usize,
}

/// Which counter is which. Built once; lookups by name do not allocate.
#[derive(Debug, Clone)]
pub(crate) struct CounterLayout {
    names: Vec<String>,
    index: HashMap<String, usize>,
    pub(crate) services: Vec<ServiceCounters>,
    /// Reflector source ports and their counter.
    pub(crate) amplification: Vec<(u16, usize)>,
    /// The counters before this index are traffic to judge (detection keys); from it on, what
    /// the drop rules dropped, one per set of `ruleset::DROP_SETS`, in that order.
    first_drop: usize,
}

/// The fixed classes, by index into the layout: [`Counter::index`] under short names.
pub(crate) mod class {
    use crate::ruleset::Counter;

    pub(crate) const IPV4: usize = Counter::Ipv4.index();
    pub(crate) const IPV6: usize = Counter::Ipv6.index();
    pub(crate) const TCP: usize = Counter::Tcp.index();
    pub(crate) const UDP: usize = Counter::Udp.index();
    pub(crate) const ICMP: usize = Counter::Icmp.index();
    pub(crate) const ICMPV6: usize = Counter::Icmpv6.index();
    pub(crate) const TCP_SYN: usize = Counter::TcpSyn.index();
    pub(crate) const TCP_ACK: usize = Counter::TcpAck.index();
    pub(crate) const TCP_RST: usize = Counter::TcpRst.index();
    pub(crate) const FRAGMENT: usize = Counter::Fragment.index();
    pub(crate) const OTHER: usize = Counter::Other.index();
    pub(crate) const TCP_ACK_EST: usize = Counter::TcpAckEst.index();
    pub(crate) const TCP_SYNACK: usize = Counter::TcpSynack.index();
    pub(crate) const TCP_ODD: usize = Counter::TcpOdd.index();
    pub(crate) const L4_OTHER: usize = Counter::L4Other.index();
}

impl CounterLayout {
    /// The layout of the table `ruleset::desired(config)` builds: fixed classes first, then the
    /// service ports, their new-connection counters, the reflector ports and the drop rules.
    pub(crate) fn new(config: &Config) -> CounterLayout {
        let mut names: Vec<String> = Counter::ALL.iter().map(|c| c.name().to_string()).collect();
        let mut add = |name: String| {
            names.push(name);
            names.len() - 1
        };
        let mut services: Vec<ServiceCounters> = config
            .services
            .iter()
            .map(|s| ServiceCounters {
                proto: s.proto,
                first: s.ports.first,
                last: s.ports.last,
                packets: add(service_counter(s.proto, s.ports.first, s.ports.last, false)),
                new: 0,
            })
            .collect();
        for s in &mut services {
            s.new = add(service_counter(s.proto, s.first, s.last, true));
        }
        let amplification = config
            .sense
            .amplification_ports
            .iter()
            .map(|&p| (p, add(amplification_counter(p))))
            .collect();
        let first_drop = names.len();
        names.extend(DROP_SETS.iter().map(|set| drop_counter(set)));
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        CounterLayout {
            names,
            index,
            services,
            amplification,
            first_drop,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// How many counters are traffic to judge: the detector's keys are `0..detected()`.
    pub(crate) fn detected(&self) -> usize {
        self.first_drop
    }

    /// The drop rules' counters: each set of `ruleset::DROP_SETS` with its counter's index.
    pub(crate) fn drops(&self) -> impl Iterator<Item = (&'static str, usize)> {
        DROP_SETS.into_iter().zip(self.first_drop..)
    }

    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        self.names.get(i).map(String::as_str).unwrap_or("?")
    }

    /// The service whose port range holds `port` for `proto`.
    #[cfg(test)]
    pub(crate) fn service(&self, proto: Proto, port: u16) -> Option<&ServiceCounters> {
        self.services
            .iter()
            .find(|s| s.proto == proto && (s.first..=s.last).contains(&port))
    }
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
}

/// Packets and bits per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Rate {
    pub(crate) pps: f64,
    pub(crate) bps: f64,
}

/// Why a tick's reading could not be turned into rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadingGap {
    /// The first reading: nothing to compare with yet.
    First,
    /// Some counters were not listed: our table is gone or changed.
    Missing(usize),
}

/// Cumulative readings of the current and previous tick, and the rates between them.
#[derive(Debug)]
pub(crate) struct CounterRates {
    layout: CounterLayout,
    previous: Vec<Reading>,
    current: Vec<Reading>,
    seen: Vec<bool>,
    rates: Vec<Rate>,
    totals: Vec<Reading>,
    previous_at: Option<Instant>,
    interval: Duration,
}

impl CounterRates {
    pub(crate) fn new(layout: CounterLayout) -> CounterRates {
        let n = layout.len();
        CounterRates {
            layout,
            previous: vec![Reading::default(); n],
            current: vec![Reading::default(); n],
            seen: vec![false; n],
            rates: vec![Rate::default(); n],
            totals: vec![Reading::default(); n],
            previous_at: None,
            interval: Duration::ZERO,
        }
    }

    pub(crate) fn layout(&self) -> &CounterLayout {
        &self.layout
    }

    /// Starts a tick's reading.
    pub(crate) fn begin(&mut self) {
        self.seen.iter_mut().for_each(|s| *s = false);
    }

    /// One listed counter. Names not in the layout are ignored.
    pub(crate) fn record(&mut self, name: &str, packets: u64, bytes: u64) {
        if let Some(i) = self.layout.index(name) {
            self.current[i] = Reading { packets, bytes };
            self.seen[i] = true;
        }
    }

    /// Ends the tick's reading at `now`: rates since the previous complete reading. A counter
    /// lower than before was reset (its table recreated): its new value is all new traffic.
    pub(crate) fn finish(&mut self, now: Instant) -> Result<(), ReadingGap> {
        let missing = self.seen.iter().filter(|s| !**s).count();
        if missing > 0 {
            self.previous_at = None;
            return Err(ReadingGap::Missing(missing));
        }
        let Some(previous_at) = self.previous_at.replace(now) else {
            self.previous.copy_from_slice(&self.current);
            return Err(ReadingGap::First);
        };
        let dt = now.saturating_duration_since(previous_at);
        self.interval = dt;
        let secs = dt.as_secs_f64().max(1e-6);
        for i in 0..self.current.len() {
            let (cur, prev) = (self.current[i], self.previous[i]);
            let delta = if cur.packets < prev.packets || cur.bytes < prev.bytes {
                cur
            } else {
                Reading {
                    packets: cur.packets - prev.packets,
                    bytes: cur.bytes - prev.bytes,
                }
            };
            self.rates[i] = Rate {
                pps: delta.packets as f64 / secs,
                bps: delta.bytes as f64 * 8.0 / secs,
            };
            self.totals[i].packets += delta.packets;
            self.totals[i].bytes += delta.bytes;
        }
        self.previous.copy_from_slice(&self.current);
        Ok(())
    }

    /// This tick's rates, indexed like the layout.
    pub(crate) fn rates(&self) -> &[Rate] {
        &self.rates
    }

    #[cfg(test)]
    pub(crate) fn rate(&self, i: usize) -> Rate {
        self.rates.get(i).copied().unwrap_or_default()
    }

    /// Everything counted since the agent started, monotonic across counter resets.
    pub(crate) fn total(&self, i: usize) -> Reading {
        self.totals.get(i).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::desired;

    #[test]
    fn layout_names_every_counter_of_the_table_in_order() {
        let config = Config::default();
        let layout = CounterLayout::new(&config);
        let names: Vec<&str> = (0..layout.len()).map(|i| layout.name(i)).collect();
        assert_eq!(
            names,
            desired(&config)
                .counters
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        assert_eq!(layout.name(class::TCP_SYN), "tcp_syn");
        assert_eq!(layout.detected(), layout.len() - DROP_SETS.len());
        let drops: Vec<(&str, &str)> = layout.drops().map(|(s, i)| (s, layout.name(i))).collect();
        assert_eq!(drops[0], ("ban4", "drop_ban4"));
        assert_eq!(drops[10], ("limit_conns", "drop_limit_conns"));
        assert_eq!(layout.name(class::OTHER), "other");
        assert_eq!(layout.name(class::L4_OTHER), "l4_other");
        let ssh = layout.service(Proto::Tcp, 22).unwrap();
        assert_eq!(
            (layout.name(ssh.packets), layout.name(ssh.new)),
            ("tcp_22", "new_tcp_22")
        );
    }

    #[test]
    fn rates_come_from_deltas_and_survive_resets() {
        let config = Config::default();
        let layout = CounterLayout::new(&config);
        let names: Vec<String> = (0..layout.len())
            .map(|i| layout.name(i).to_string())
            .collect();
        let mut rates = CounterRates::new(layout);
        let t0 = Instant::now();
        let read = |rates: &mut CounterRates, syn: u64, at: Instant| {
            rates.begin();
            for n in &names {
                let value = if n == "tcp_syn" { syn } else { 0 };
                rates.record(n, value, value * 60);
            }
            rates.finish(at)
        };
        assert_eq!(read(&mut rates, 100, t0), Err(ReadingGap::First));
        read(&mut rates, 1100, t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(rates.rate(class::TCP_SYN).pps.round(), 10_000.0);
        assert_eq!(rates.rate(class::TCP_SYN).bps.round(), 4_800_000.0);
        // The table was recreated: the counter restarts from 0.
        read(&mut rates, 50, t0 + Duration::from_millis(200)).unwrap();
        assert_eq!(rates.rate(class::TCP_SYN).pps.round(), 500.0);
        assert_eq!(rates.total(class::TCP_SYN).packets, 1050);
        // A missing counter means a missing table: no rates from a partial reading.
        rates.begin();
        rates.record("tcp_syn", 60, 0);
        assert_eq!(
            rates.finish(t0 + Duration::from_millis(300)),
            Err(ReadingGap::Missing(names.len() - 1))
        );
    }
}
