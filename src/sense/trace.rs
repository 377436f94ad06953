//! `ftagent run --trace-samples`: one JSON line per second with what the agent sees — rates
//! and totals per counter, top talkers, connection counts, sample loss — so a human can check
//! it against the traffic. Debug output: it allocates, once a second, outside the tick.

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::talkers::Talkers;
use super::Sensor;
use crate::addr::Cidr;
use crate::time::rfc3339;

/// How many entries each top list shows.
const TOP: usize = 5;

/// The trace line for the window that ends at `now`, and a new window begun; None for the
/// first call (no window yet). `tick_allocations` is the number of heap allocations made
/// inside ticks during the window.
pub fn window_line(sensor: &mut Sensor, now: Instant, tick_allocations: u64) -> Option<String> {
    let totals: Vec<_> = (0..sensor.counters.layout().len())
        .map(|i| sensor.counters.total(i))
        .collect();
    let line = sensor.window_start.map(|start| {
        let secs = now.saturating_duration_since(start).as_secs_f64().max(1e-6);
        let layout = sensor.counters.layout();
        let mut counters = Map::new();
        for (i, total) in totals.iter().enumerate() {
            let base = sensor.window_base[i];
            let packets = total.packets - base.packets;
            let bytes = total.bytes - base.bytes;
            counters.insert(
                layout.name(i).to_string(),
                json!({
                    "pps": round(packets as f64 / secs),
                    "bps": round(bytes as f64 * 8.0 / secs),
                    "packets": total.packets,
                    "bytes": total.bytes,
                }),
            );
        }
        let mut conn = [(IpAddr::from([0u8; 4]), 0u32); TOP];
        let n = sensor.connections.top_sources(&mut conn);
        let connections: Vec<Value> = conn[..n]
            .iter()
            .map(|(a, c)| json!({"addr": a.to_string(), "connections": c}))
            .collect();
        let record = json!({
            "ts": rfc3339(SystemTime::now()),
            "event": "sample",
            "window_ms": (secs * 1000.0).round(),
            "counters": counters,
            "samples": talkers_json(&sensor.window),
            "conntrack": { "entries": sensor.conntrack_entries, "top_sources": connections },
            "nflog": {
                "received": sensor.loss.received,
                "lost": sensor.loss.lost,
                "enobufs": sensor.loss.enobufs,
                "malformed": sensor.loss.malformed,
            },
            "tick_allocations": tick_allocations,
        });
        record.to_string()
    });
    sensor.next_window(now);
    line
}

fn talkers_json(t: &Talkers) -> Value {
    let total = t.samples().max(1) as f64;
    let share = |n: u64| round(n as f64 / total * 1000.0) / 1000.0;
    let mut sources = [(IpAddr::from([0u8; 4]), 0u64); TOP];
    let n = t.top_sources(&mut sources);
    let sources: Vec<Value> = sources[..n]
        .iter()
        .map(|(a, c)| json!({"addr": a.to_string(), "samples": c, "share": share(*c)}))
        .collect();
    let mut prefixes = [(Cidr::host(IpAddr::from([0u8; 4])), 0u64); TOP];
    let n = t.top_prefixes(&mut prefixes);
    let prefixes: Vec<Value> = prefixes[..n]
        .iter()
        .map(|(p, c)| json!({"prefix": p.to_string(), "samples": c, "share": share(*c)}))
        .collect();
    let mut ports = [((0u8, 0u16), 0u64); TOP];
    let n = t.top_dst_ports(&mut ports);
    let ports: Vec<Value> = ports[..n]
        .iter()
        .map(|((proto, port), c)| {
            json!({"proto": crate::ruleset::expr::l4proto_name(*proto), "port": port, "samples": c, "share": share(*c)})
        })
        .collect();
    json!({
        "count": t.samples(),
        "distinct_sources": round(t.distinct_sources()),
        "top_sources": sources,
        "top_prefixes": prefixes,
        "top_dst_ports": ports,
        "sizes": t.size_histogram().to_vec(),
        "ttls": t.ttl_histogram().to_vec(),
    })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
