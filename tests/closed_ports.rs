//! Issue 15, item 2: distributed floods aimed at no single port (random destination ports from
//! tens of thousands of spoofed sources) are held at the closed ports — no configured service,
//! no socket of the victim, no connection — while the users' services (DNS on :53, which is no
//! configured service here, only a listening socket; HTTP on :80) keep answering and the
//! victim's own DNS lookups to a resolver in another namespace get their replies. Measured as
//! the share of what arrived at the victim that reached its UDP (TCP) layer, with the measure
//! on, against the same flood before the agent ran.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::agent::{dump_counter, Agent, Setup};
use crate::lab::pacer::{self, Src, Transport, TCP_SYN};
use crate::lab::{self, Flood, Lab, OTHER4, VICTIM4, VICTIM6};

const SECTIONS: &str =
    "[[service]]\nport = 27015\nproto = \"udp\"\n\n[[service]]\nport = 80\nproto = \"tcp\"\n\n\
    [sense]\nconntrack_interval = \"1s\"\n\n[detection]\nhold = \"2s\"\n\n";
const FLOOD_PPS: u64 = 50_000;
/// Four seconds of flood: far more packets than the ~64,000 spoofed sources, so nearly all
/// of them send (at least 30,000 distinct with certainty).
const FLOOD_PACKETS: u64 = 200_000;
/// The unmitigated reference: one second of the same flood, before the agent runs.
const REFERENCE_PACKETS: u64 = 50_000;

/// The sum of the victim's `nstat` counters `names`.
fn nstat(lab: &Lab, names: &[&str]) -> u64 {
    lab.victim_nstat(names).iter().sum()
}

/// Where a flood's packets are counted: what arrived, and what its transport layer took.
#[derive(Clone, Copy)]
struct Layer {
    name: &'static str,
    arrived: fn(&Lab) -> u64,
    reached: fn(&Lab) -> u64,
}

/// IPv4 floods: what the victim's IPv4 layer received (counted before any hook: all that
/// arrived, the users' few hundred packets a second besides); datagrams its UDP layer took
/// (delivered, to no port, in error).
const UDP4: Layer = Layer {
    name: "UDP",
    arrived: |lab| nstat(lab, &["IpInReceives"]),
    reached: |lab| nstat(lab, &["UdpInDatagrams", "UdpNoPorts", "UdpInErrors"]),
};
/// Segments the victim's TCP layer took (both families: the users' HTTP is a few hundred).
const TCP4: Layer = Layer {
    name: "TCP",
    arrived: |lab| nstat(lab, &["IpInReceives"]),
    reached: |lab| nstat(lab, &["TcpInSegs"]),
};
/// IPv6 floods: the same counts of the IPv6 layer.
const UDP6: Layer = Layer {
    name: "UDP6",
    arrived: |lab| nstat(lab, &["Ip6InReceives"]),
    reached: |lab| nstat(lab, &["Udp6InDatagrams", "Udp6NoPorts", "Udp6InErrors"]),
};

/// A layer's counts so far.
#[derive(Clone, Copy)]
struct Counts {
    arrived: u64,
    reached: u64,
}

impl Layer {
    fn counts(self, lab: &Lab) -> Counts {
        Counts {
            arrived: (self.arrived)(lab),
            reached: (self.reached)(lab),
        }
    }

    /// What arrived since `before`, what of it reached the layer, and the share.
    fn since(self, lab: &Lab, before: Counts) -> (u64, u64, f64) {
        std::thread::sleep(Duration::from_millis(200));
        let now = self.counts(lab);
        let arrived = now.arrived - before.arrived;
        let reached = now.reached - before.reached;
        (arrived, reached, reached as f64 / arrived.max(1) as f64)
    }
}

/// The share of a random-port flood that reaches `layer` with nothing in the way: one second
/// of it before the agent runs.
fn unmitigated_share(lab: &Lab, src: Src, dst: &str, transport: Transport, layer: Layer) -> f64 {
    let before = layer.counts(lab);
    let flood = lab.random_ports_flood(src, dst, transport, REFERENCE_PACKETS, FLOOD_PPS);
    flood.finish(Duration::from_secs(30));
    let (arrived, reached, share) = layer.since(lab, before);
    eprintln!(
        "issue15: unmitigated {} flood to random ports: {reached} of {arrived} arrived reached \
         the layer",
        layer.name
    );
    assert!(
        arrived >= REFERENCE_PACKETS / 2,
        "the reference flood arrived: {arrived}"
    );
    share
}

/// The UDP port of a service started during the flood.
const NEW_SERVICE: u16 = 41000;

/// Counts the test's own datagrams (from OTHER4, a source the spoofed flood never uses) to
/// `NEW_SERVICE` where they arrive (prerouting, priority −500, before any chain of ours) and
/// where they are delivered (input, priority 0, after the closed-port chain): a table of the
/// test's own. (Counting the flood's packets to that port too made the two counts race: one
/// arriving between the reads of the two chains was counted as arrived and not passed.)
fn count_new_service(lab: &Lab) {
    lab.victim.run_ok(&["nft", "add table inet newservice"]);
    for (chain, hook, priority) in [
        ("prerouting", "prerouting", -500),
        ("input", "input", 0),
        ("early_input", "input", -160),
    ] {
        lab.victim.run_ok(&[
            "nft",
            &format!(
                "add chain inet newservice {chain} {{ type filter hook {hook} priority \
                 {priority} ; }}"
            ),
        ]);
        lab.victim.run_ok(&[
            "nft",
            &format!(
                "add rule inet newservice {chain} ip saddr {OTHER4} udp dport {NEW_SERVICE} \
                 counter"
            ),
        ]);
    }
}

/// The datagrams `count_new_service` counted in `chain` so far.
fn port_count(lab: &Lab, chain: &str) -> u64 {
    let json = lab
        .victim
        .run_ok(&["nft", "-j", "list", "chain", "inet", "newservice", chain]);
    let v: Value = serde_json::from_str(&json).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .flat_map(|e| e.iter())
        .find_map(|e| e["counter"]["packets"].as_u64())
        .unwrap()
}

fn find(agent: &Agent, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    agent.all_events().into_iter().find(pred)
}

fn wait_for(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    lab::wait_until(Duration::from_secs(10), what, || {
        find(agent, &pred).is_some()
    });
    find(agent, &pred).unwrap()
}

/// Starts a spoofed flood of `transport` to random ports and waits for its incident (no
/// port, not concentrated) and the closed-port limit for `proto`.
fn flood_until_limited(
    lab: &Lab,
    agent: &Agent,
    transport: Transport,
    proto: &str,
    vector: &str,
) -> Flood {
    let flood = lab.random_ports_flood(Src::Spoofed4, VICTIM4, transport, FLOOD_PACKETS, FLOOD_PPS);
    let start = wait_for(agent, vector, |e| {
        e["event"] == "attack_start" && e["vector"] == vector
    });
    assert!(start["port"].is_null(), "no single port: {start}");
    assert_eq!(start["concentrated"], false, "{start}");
    let incident = start["incident"].clone();
    let applied = wait_for(agent, "limit_closed_ports", |e| {
        e["event"] == "mitigation_applied"
            && e["incident"] == incident
            && e["action"] == "limit_closed_ports"
    });
    assert_eq!(applied["proto"], proto, "{applied}");
    flood
}

/// UDP and then TCP SYNs to random ports from ~64,000 spoofed IPv4 sources: with the
/// closed-port limit on, at least 90 % fewer of the packets that arrive reach the transport
/// layer than with nothing in the way; the users (DNS on :53 — a listening socket, no
/// configured service — and HTTP on :80) are served throughout, the victim's own DNS lookup
/// is answered, a UDP service started during the flood is open at once; no source is
/// banned. IPv6: a flood to random ports from random spoofed sources (`pacer::SPOOFED6`),
/// while the limit is on, is held by it too (the limit is per transport, both families).
#[test]
fn issue15_random_port_floods_are_held_at_the_closed_ports() {
    let Some((_guard, lab)) = lab::start("closed-ports") else {
        return;
    };
    let _resolver = lab.dns_server();
    count_new_service(&lab);
    let udp = Transport::Udp { payload: 32 };
    let tcp = Transport::Tcp { flags: TCP_SYN };
    // The victim answers nothing to the spoofed IPv6 sources beyond its namespace.
    lab.victim
        .run_ok(&["ip", "-6", "route", "replace", "blackhole", pacer::SPOOFED6]);
    let v6 = Src::Spoofed6;
    let udp_free = unmitigated_share(&lab, Src::Spoofed4, VICTIM4, udp, UDP4);
    let tcp_free = unmitigated_share(&lab, Src::Spoofed4, VICTIM4, tcp, TCP4);
    let udp6_free = unmitigated_share(&lab, v6, VICTIM6, udp, UDP6);

    let sections = format!("{SECTIONS}[mitigation]\nclosed_port_limit_pps = 100\n");
    let setup = Setup {
        agent: "warmup = \"3s\"",
        sections: &sections,
        ..Setup::default()
    };
    let mut agent = Agent::configured(&lab, setup);
    agent.start();
    lab.ping(OTHER4, VICTIM4, 100);
    std::thread::sleep(Duration::from_secs(2));

    let from = SystemTime::now();
    let whole = UDP4.counts(&lab);
    let flood = flood_until_limited(&lab, &agent, udp, "udp", "udp_flood");
    let on = UDP4.counts(&lab);
    let on6 = UDP6.counts(&lab);
    let flood6 = lab.random_ports_flood(v6, VICTIM6, udp, REFERENCE_PACKETS, FLOOD_PPS / 2);
    flood6.finish(Duration::from_secs(30));
    let (arrived6, reached6, udp6_on) = UDP6.since(&lab, on6);
    // A service started now is open at once (the kernel's socket lookup, not a list): every
    // new flow to it that arrives (prerouting, before any of ours) passes the closed-port
    // chain (input, after ours).
    let mut echo = lab.udp_echo(NEW_SERVICE);
    let new_flows = || (port_count(&lab, "prerouting"), port_count(&lab, "input"));
    let before = new_flows();
    lab.udp_new_flows(OTHER4, NEW_SERVICE, 20);
    let after = new_flows();
    let (arrived_new, passed_new) = (after.0 - before.0, after.1 - before.1);
    // (The flood hits its port too: a server that died answering a spoofed source would close
    // the port, as it once did.)
    assert!(echo.running(), "the new service died: {}", echo.stderr());
    // The victim's own lookup: its reply comes to an ephemeral port, in a connection.
    assert!(
        lab.dns_query("own.lab"),
        "the victim's own DNS lookup is answered"
    );
    let sent = flood.finish(Duration::from_secs(60)).packets;
    let (arrived, reached, udp_on) = UDP4.since(&lab, on);
    let (_, whole_reached, whole_share) = UDP4.since(&lab, whole);
    eprintln!(
        "issue15: UDP to random ports, {sent} packets from spoofed sources: with the closed-port \
         limit {reached} of {arrived} arrived reached the UDP layer ({:.2} %), unmitigated \
         {:.1} %, the whole flood from its first packet {whole_reached} ({:.2} %); IPv6 from \
         spoofed sources {reached6} of {arrived6} ({:.2} %), unmitigated {:.1} %; new \
         flows to a service started during it: {passed_new} of {arrived_new} passed",
        udp_on * 100.0,
        udp_free * 100.0,
        whole_share * 100.0,
        udp6_on * 100.0,
        udp6_free * 100.0
    );
    assert!(
        udp_on * 10.0 <= udp_free,
        "at least 90 % fewer reach the UDP layer: {udp_on} against {udp_free}"
    );
    assert!(
        udp6_on * 10.0 <= udp6_free,
        "IPv6: at least 90 % fewer reach the UDP layer: {udp6_on} against {udp6_free}"
    );
    assert!(
        arrived_new >= 10 && passed_new == arrived_new,
        "the new service is open: {passed_new} of {arrived_new} arrived passed ({} at input -160)\n{}\n{}\n{}",
        port_count(&lab, "early_input"),
        lab.victim.run_ok(&["conntrack", "-S"]),
        lab.victim.run_ok(&["nstat", "-az"]),
        agent.dump()
    );

    let whole = TCP4.counts(&lab);
    let flood = flood_until_limited(&lab, &agent, tcp, "tcp", "syn_flood");
    let on = TCP4.counts(&lab);
    let sent = flood.finish(Duration::from_secs(60)).packets;
    let (arrived, reached, tcp_on) = TCP4.since(&lab, on);
    let (_, whole_reached, whole_share) = TCP4.since(&lab, whole);
    eprintln!(
        "issue15: SYNs to random ports, {sent} packets from spoofed sources: with the closed-port \
         limit {reached} of {arrived} arrived reached the TCP layer ({:.2} %), unmitigated \
         {:.1} %, the whole flood from its first packet {whole_reached} ({:.2} %)",
        tcp_on * 100.0,
        tcp_free * 100.0,
        whole_share * 100.0
    );
    assert!(
        tcp_on * 10.0 <= tcp_free,
        "at least 90 % fewer reach the TCP layer: {tcp_on} against {tcp_free}"
    );
    lab.assert_users_served_between(from, SystemTime::now(), 0.95);
    let dump = agent.dump();
    assert!(
        dump_counter(&dump, "drop_limit_closed").unwrap() > 0,
        "the closed-port rule dropped them: {dump}"
    );
    for set in ["ban4", "bannet4", "ban6"] {
        let body = dump
            .split("\tset ")
            .find(|s| s.starts_with(&format!("{set} ")))
            .unwrap();
        assert!(!body.contains("elements"), "no bans: {body}");
    }
}
