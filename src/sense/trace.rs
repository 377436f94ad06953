//! `ftagent run --trace-samples`: one JSON line per second with what the agent sees — rates
//! and totals per counter, top talkers, connection counts, sample loss — so a human can check
//! it against the traffic. Debug output: it allocates, once a second, outside the tick.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::talkers::Talkers;
use super::Sensor;
use crate::addr::Cidr;
use crate::event::{self, EventBody};

/// How many entries each top list shows.
const TOP: usize = 5;

/// The trace line for the window that ends at `now`, and a new window begun; None for the
/// first call (no window yet). `tick_allocations` is the number of heap allocations made
/// inside ticks during the window.
pub(crate) fn window_line(
    sensor: &mut Sensor,
    now: Instant,
    tick_allocations: u64,
) -> Option<String> {
    let totals: Vec<_> = (0..sensor.counters.layout().len())
        .map(|i| sensor.counters.total(i))
        .collect();
    let line = sensor.window_start.map(|start| {
        let secs = now.saturating_duration_since(start).as_secs_f64().max(1e-6);
        let layout = sensor.counters.layout();
        let mut counters = BTreeMap::new();
        for (i, total) in totals.iter().enumerate() {
            let base = sensor.window_base[i];
            let packets = total.packets - base.packets;
            let bytes = total.bytes - base.bytes;
            counters.insert(
                layout.name(i),
                CounterLine {
                    pps: round(packets as f64 / secs),
                    bps: round(bytes as f64 * 8.0 / secs),
                    packets: total.packets,
                    bytes: total.bytes,
                },
            );
        }
        let mut conn = [(IpAddr::from([0u8; 4]), 0u32); TOP];
        let n = sensor.connections.top_sources(&mut conn);
        let record = SampleLine {
            window_ms: (secs * 1000.0).round(),
            counters,
            samples: talkers_line(&sensor.window),
            conntrack: ConntrackLine {
                entries: sensor.conntrack_entries,
                top_sources: conn[..n]
                    .iter()
                    .map(|&(addr, connections)| SourceConnections {
                        addr: addr.to_string(),
                        connections,
                    })
                    .collect(),
            },
            nflog: NflogLine {
                received: sensor.loss.received,
                lost: sensor.loss.lost,
                enobufs: sensor.loss.enobufs,
                malformed: sensor.loss.malformed,
            },
            tick_allocations,
        };
        event::line(&record, SystemTime::now())
    });
    sensor.next_window(now);
    line
}

/// The `sample` event's fields, in schema order.
#[derive(Serialize)]
struct SampleLine<'a> {
    window_ms: f64,
    /// By counter name.
    counters: BTreeMap<&'a str, CounterLine>,
    samples: TalkersLine,
    conntrack: ConntrackLine,
    nflog: NflogLine,
    tick_allocations: u64,
}

impl EventBody for SampleLine<'_> {
    fn name(&self) -> &'static str {
        "sample"
    }
}

#[derive(Serialize)]
struct CounterLine {
    pps: f64,
    bps: f64,
    packets: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct ConntrackLine {
    entries: u64,
    top_sources: Vec<SourceConnections>,
}

#[derive(Serialize)]
struct SourceConnections {
    addr: String,
    connections: u32,
}

#[derive(Serialize)]
struct NflogLine {
    received: u64,
    lost: u64,
    enobufs: u64,
    malformed: u64,
}

#[derive(Serialize)]
struct TalkersLine {
    count: u64,
    distinct_sources: f64,
    top_sources: Vec<SourceSamples>,
    top_prefixes: Vec<PrefixSamples>,
    top_dst_ports: Vec<PortSamples>,
    sizes: Vec<u64>,
    ttls: Vec<u64>,
}

#[derive(Serialize)]
struct SourceSamples {
    addr: String,
    samples: u64,
    share: f64,
}

#[derive(Serialize)]
struct PrefixSamples {
    prefix: String,
    samples: u64,
    share: f64,
}

#[derive(Serialize)]
struct PortSamples {
    proto: String,
    port: u16,
    samples: u64,
    share: f64,
}

fn talkers_line(t: &Talkers) -> TalkersLine {
    let total = t.samples().max(1) as f64;
    let share = |n: u64| round(n as f64 / total * 1000.0) / 1000.0;
    let mut sources = [(IpAddr::from([0u8; 4]), 0u64); TOP];
    let n = t.top_sources(&mut sources);
    let top_sources = sources[..n]
        .iter()
        .map(|&(a, c)| SourceSamples {
            addr: a.to_string(),
            samples: c,
            share: share(c),
        })
        .collect();
    let mut prefixes = [(Cidr::host(IpAddr::from([0u8; 4])), 0u64); TOP];
    let n = t.top_prefixes(&mut prefixes);
    let top_prefixes = prefixes[..n]
        .iter()
        .map(|&(p, c)| PrefixSamples {
            prefix: p.to_string(),
            samples: c,
            share: share(c),
        })
        .collect();
    let mut ports = [((0u8, 0u16), 0u64); TOP];
    let n = t.top_dst_ports(&mut ports);
    let top_dst_ports = ports[..n]
        .iter()
        .map(|&((proto, port), c)| PortSamples {
            proto: crate::ruleset::expr::l4proto_name(proto),
            port,
            samples: c,
            share: share(c),
        })
        .collect();
    TalkersLine {
        count: t.samples(),
        distinct_sources: round(t.distinct_sources()),
        top_sources,
        top_prefixes,
        top_dst_ports,
        sizes: t.size_histogram().to_vec(),
        ttls: t.ttl_histogram().to_vec(),
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::Value;

    #[test]
    fn a_window_line_is_json_with_the_counters() {
        let mut sensor = Sensor::new(&Config::default());
        let t0 = Instant::now();
        assert!(window_line(&mut sensor, t0, 0).is_none());
        let line = window_line(&mut sensor, t0 + std::time::Duration::from_secs(1), 0).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "sample");
        assert_eq!(v["counters"]["tcp_syn"]["packets"], 0);
        assert!(v["samples"]["top_sources"].as_array().unwrap().is_empty());
    }
}
