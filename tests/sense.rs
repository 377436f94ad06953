//! Issue 3: what the agent sees of real traffic in a lab namespace, read from its
//! `--trace-samples` lines: per-port rates that agree with the victim's interface counter,
//! the flood's source on top, TCP flag classes, new connections per port, concurrent
//! connections per source, and a fast flood that leaves the loop running with its loss counted.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{Agent, Setup};
use crate::lab::{self, pacer, Lab, UdpFlood, ATTACKER4, VICTIM4};

const SERVICES: &str = "[[service]]\nport = 27015\nproto = \"udp\"\n\n[[service]]\nport = 80\nproto = \"tcp\"\n\n[[service]]\nport = 8080\nproto = \"tcp\"\n\n[sense]\nconntrack_interval = \"1s\"\n";

fn start(lab: &Lab) -> Agent<'_> {
    let mut agent = Agent::configured(
        lab,
        Setup {
            sections: SERVICES,
            ..Setup::default()
        },
    );
    agent.start_with(&["--trace-samples"]);
    agent.next_trace();
    agent
}

fn packets(trace: &Value, counter: &str) -> u64 {
    trace["counters"][counter]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {counter} in {trace}"))
}

/// The trace after all traffic so far has been counted (two windows later).
fn settled(agent: &Agent) -> Value {
    agent.next_trace();
    agent.next_trace()
}

#[test]
fn issue3_udp_port_rate_matches_the_interface_counter_and_names_the_source() {
    let Some((_guard, lab)) = lab::start("sense-udp") else {
        return;
    };
    let agent = start(&lab);
    let before = settled(&agent);
    let rx_before = lab.victim_rx_packets();
    let seen_before = agent.traces().len();
    let flood = UdpFlood {
        src: ATTACKER4,
        dst: VICTIM4,
        sport: 40000,
        dport: Some(27015),
        payload: 18,
    };
    let sent = lab
        .udp_flood(&flood, 100_000, 50_000)
        .finish(Duration::from_secs(60));
    let after = settled(&agent);
    let rx = lab.victim_rx_packets() - rx_before;
    let counted = packets(&after, "udp_27015") - packets(&before, "udp_27015");
    let error = (counted as f64 - rx as f64).abs() / rx as f64;
    eprintln!(
        "issue3: interface received {rx}, agent counted {counted} for udp/27015 ({:.2} %)",
        error * 100.0
    );
    assert!(rx >= sent.packets, "the flood arrived: {rx} of {sent:?}");
    assert!(error < 0.05, "agent {counted} vs interface {rx}");

    // Per-second rates during the flood, and the flood's source on top of the samples.
    let during: Vec<Value> = agent.traces().into_iter().skip(seen_before).collect();
    let busiest = during
        .iter()
        .max_by_key(|t| t["counters"]["udp_27015"]["pps"].as_f64().unwrap_or(0.0) as u64)
        .unwrap();
    let pps = busiest["counters"]["udp_27015"]["pps"].as_f64().unwrap();
    let shape = lab.flood_shape().expect("the flood in the victim's record");
    let received = shape.packets as f64 / (shape.to - shape.from);
    eprintln!(
        "issue3: the victim received {received:.0} pps; the agent's busiest second {pps} pps"
    );
    assert!(
        pps > received * 0.5,
        "a flood received at {received:.0} pps shows as {pps} pps"
    );
    lab.assert_users_served(0.95);
    let top = &busiest["samples"]["top_sources"][0];
    assert_eq!(top["addr"], ATTACKER4, "{busiest}");
    assert!(top["share"].as_f64().unwrap() > 0.9, "{top}");
    assert_eq!(busiest["samples"]["top_dst_ports"][0]["port"], 27015);
}

/// Exact counts per class: the lab runs without its users here (their HTTP connections to
/// :80 would be counted too).
#[test]
fn issue3_syn_and_ack_floods_land_in_their_own_classes() {
    let Some((_guard, lab)) = lab::start_quiet("sense-tcp") else {
        return;
    };
    let agent = start(&lab);
    let t0 = settled(&agent);
    let syns = lab
        .tcp_flood(ATTACKER4, VICTIM4, 80, pacer::TCP_SYN, 5000, 10_000)
        .finish(Duration::from_secs(30))
        .packets;
    let t1 = settled(&agent);
    let delta = |a: &Value, b: &Value, c: &str| packets(b, c) - packets(a, c);
    assert_eq!(
        delta(&t0, &t1, "tcp_syn"),
        syns,
        "every SYN in the SYN class"
    );
    assert_eq!(delta(&t0, &t1, "tcp_ack"), 0);
    assert_eq!(delta(&t0, &t1, "tcp_80"), syns);
    assert!(
        delta(&t0, &t1, "new_tcp_80") >= syns * 95 / 100,
        "new connections to 80: {}",
        delta(&t0, &t1, "new_tcp_80")
    );

    let acks = lab
        .tcp_flood(ATTACKER4, VICTIM4, 80, pacer::TCP_ACK, 5000, 10_000)
        .finish(Duration::from_secs(30))
        .packets;
    let t2 = settled(&agent);
    assert_eq!(
        delta(&t1, &t2, "tcp_ack"),
        acks,
        "every ACK in the ACK class"
    );
    assert_eq!(delta(&t1, &t2, "tcp_syn"), 0, "no ACK counted as SYN");
}

#[test]
fn issue3_idle_connections_are_counted_per_source() {
    let Some((_guard, lab)) = lab::start("sense-conns") else {
        return;
    };
    let agent = start(&lab);
    let _server = lab.accept_connections(VICTIM4, 8080, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let mut client = lab.hold_connections(ATTACKER4, VICTIM4, 8080, 300, Duration::from_secs(20));
    lab::wait_until(Duration::from_secs(10), "300 connections held", || {
        client.stdout().contains("held 300")
    });
    assert!(client.running(), "{}", client.stderr());
    let mut last = Value::Null;
    lab::wait_until(
        Duration::from_secs(10),
        "the agent to count 300 connections from the attacker",
        || {
            last = agent.next_trace();
            let top = &last["conntrack"]["top_sources"][0];
            top["addr"] == ATTACKER4 && top["connections"] == 300
        },
    );
    assert!(
        last["conntrack"]["entries"].as_u64().unwrap() >= 300,
        "{last}"
    );
}

#[test]
fn issue3_fastest_flood_keeps_the_loop_running_and_counts_samples() {
    let Some((_guard, lab)) = lab::start("sense-fast") else {
        return;
    };
    let agent = start(&lab);
    let before = settled(&agent);
    let cpu_before = agent.cpu_time();
    let lines_before = agent.traces().len();
    let started = Instant::now();
    let flood = UdpFlood {
        src: ATTACKER4,
        dst: VICTIM4,
        sport: 40000,
        dport: Some(9999),
        payload: 18,
    };
    lab.trafgen_udp(&flood, 1_000_000);
    let flood_time = started.elapsed();
    let cpu = agent.cpu_time() - cpu_before;
    lab.assert_users_served(0.95);
    let after = settled(&agent);
    let lines = agent.traces().len() - lines_before;
    let counted = packets(&after, "other") - packets(&before, "other");
    let received = after["nflog"]["received"].as_u64().unwrap()
        - before["nflog"]["received"].as_u64().unwrap();
    let lost = after["nflog"]["lost"].as_u64().unwrap();
    let pps = counted as f64 / flood_time.as_secs_f64();
    eprintln!(
        "issue3: fastest flood {counted} packets in {:.2} s ({pps:.0} pps); agent CPU {:.3} s = {:.1} % of one core; \
         {received} samples received, {lost} lost, {} enobufs; tick allocations {}",
        flood_time.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / flood_time.as_secs_f64() * 100.0,
        after["nflog"]["enobufs"],
        after["tick_allocations"],
    );
    assert!(
        counted >= 990_000,
        "the agent counted the whole flood: {counted}"
    );
    // The loop kept ticking: a trace line for (nearly) every second of the flood.
    assert!(
        lines as f64 >= flood_time.as_secs_f64() - 1.0,
        "{lines} lines in {flood_time:?}"
    );
    // Sampling is capped in the kernel: about sample_rate per second, whatever the flood.
    let cap = 2000.0 * (flood_time.as_secs_f64() + 3.0) + 400.0;
    assert!(
        (received as f64) < cap,
        "{received} samples in {flood_time:?}"
    );
    assert!(received > 0 && after["nflog"]["malformed"] == 0);
    assert_eq!(
        after["tick_allocations"], 0,
        "ticks allocate nothing under flood"
    );
}
