//! Issue 15: a spoofed SYN flood on a service port meets the kernel's SYN proxy (nft
//! `synproxy`, SYNs kept out of conntrack): the flood's SYNs are answered with SYN cookies
//! before the victim's TCP layer, while the real users' HTTP clients keep connecting through
//! the proxy; then the same flood from spoofed IPv6 sources. The proxy and
//! `nf_conntrack_tcp_loose` are put back when the incident ends.

use std::time::Duration;

use serde_json::Value;

use crate::agent::{Agent, Setup};
use crate::lab::{self, Lab, VICTIM_IF};

const SECTIONS: &str =
    "[[service]]\nport = 80\nproto = \"tcp\"\n\n[sense]\nconntrack_interval = \"1s\"\n\n\
    [detection]\nhold = \"2s\"\n\n";

fn event(agent: &Agent, name: &str, action: &str) -> Option<Value> {
    agent
        .all_events()
        .into_iter()
        .find(|e| e["event"] == name && e["action"] == action)
}

fn wait_event(agent: &Agent, name: &str, action: &str, timeout: Duration) -> Value {
    lab::wait_until(timeout, &format!("{name} {action}"), || {
        event(agent, name, action).is_some()
    });
    event(agent, name, action).unwrap()
}

/// Counts, in a table of the test's own before every other chain (priority -500), the SYNs
/// to :80 that arrive on the attacker's veth: the flood as the victim received it.
fn count_flood_syns(lab: &Lab) {
    lab.victim.run_ok(&["nft", "add table inet synflood"]);
    lab.victim.run_ok(&[
        "nft",
        "add chain inet synflood count { type filter hook prerouting priority -500 ; }",
    ]);
    lab.victim.run_ok(&[
        "nft",
        &format!(
            "add rule inet synflood count iifname \"{VICTIM_IF}\" tcp dport 80 tcp flags & (syn | ack) == syn counter"
        ),
    ]);
}

fn flood_syns(lab: &Lab) -> u64 {
    let json = lab
        .victim
        .run_ok(&["nft", "-j", "list", "table", "inet", "synflood"]);
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

/// `Tcp: InSegs` of the victim namespace (what `nstat` shows as `TcpInSegs`): every segment
/// the TCP layer received.
fn tcp_in_segs(lab: &Lab) -> u64 {
    lab.victim_nstat(&["TcpInSegs"])[0]
}

fn tcp_loose(lab: &Lab) -> String {
    lab.victim
        .run_ok(&["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose"])
        .trim()
        .to_string()
}

#[test]
fn issue15_syn_proxy_holds_a_spoofed_syn_flood_while_clients_connect() {
    // With the users' nginx on :80 and their HTTP and DNS clients running.
    let Some((_guard, lab)) = lab::start("synproxy") else {
        return;
    };
    count_flood_syns(&lab);
    let setup = Setup {
        agent: "warmup = \"3s\"",
        sections: SECTIONS,
        ..Setup::default()
    };
    let mut agent = Agent::configured(&lab, setup);
    agent.start();
    std::thread::sleep(Duration::from_secs(3));
    let loose_before = tcp_loose(&lab);

    let (syns0, segs0) = (flood_syns(&lab), tcp_in_segs(&lab));
    // Spoofed sources all over 10.250/16: no source to ban, only the port to protect.
    let rx = lab.victim_rx_packets();
    // Long enough (8 s) that the detection's time (0.2–0.6 s here) is a small share.
    let flood = lab.syn_flood_spoofed(80, 1_200_000, 150_000);
    let arrived = lab.wait_arrival(rx, 10);
    let applied = wait_event(
        &agent,
        "mitigation_applied",
        "synproxy",
        Duration::from_secs(10),
    );
    let ts = |e: &Value| humantime::parse_rfc3339(e["ts"].as_str().unwrap()).unwrap();
    assert_eq!(applied["port"], 80, "{applied}");
    assert_eq!(
        tcp_loose(&lab),
        "0",
        "conntrack strict while the proxy runs"
    );
    let on_after = ts(&applied).duration_since(arrived).unwrap_or_default();
    // From here on the proxy is in (it was some milliseconds before this read).
    let (syns_on, segs_on) = (flood_syns(&lab), tcp_in_segs(&lab));
    let sent = flood.finish(Duration::from_secs(40));
    let (syns_end, segs_end) = (flood_syns(&lab), tcp_in_segs(&lab));
    // The same from spoofed IPv6 sources, right after (the incident and its proxy go on).
    let sent6 = lab
        .syn_flood_spoofed6(80, 300_000, 100_000)
        .finish(Duration::from_secs(20));
    let (syns6, segs6) = (flood_syns(&lab) - syns_end, tcp_in_segs(&lab) - segs_end);
    let held6 = 1.0 - segs6 as f64 / syns6 as f64;
    eprintln!(
        "issue15: SYN proxy, IPv6: {syns6} flood SYNs arrived ({:.0} kpps, {} sent); Tcp.InSegs \
         rose by {segs6}: {:.2} % held back",
        syns6 as f64 / sent6.elapsed.as_secs_f64() / 1000.0,
        sent6.packets,
        held6 * 100.0
    );
    let (syns, segs) = (syns_end - syns0, segs_end - segs0);
    let kpps = syns as f64 / sent.elapsed.as_secs_f64() / 1000.0;
    let held = 1.0 - segs as f64 / syns as f64;
    let held_on = 1.0 - (segs_end - segs_on) as f64 / (syns_end - syns_on) as f64;
    eprintln!(
        "issue15: SYN proxy: {syns} flood SYNs arrived ({kpps:.0} kpps over {:.1} s, {} sent), \
         the proxy on {} ms after the first; Tcp.InSegs rose by {segs} (the users' segments \
         included): {:.1} % held back; with the proxy on: {} SYNs, {} segments, {:.2} %",
        sent.elapsed.as_secs_f64(),
        sent.packets,
        on_after.as_millis(),
        held * 100.0,
        syns_end - syns_on,
        segs_end - segs_on,
        held_on * 100.0
    );
    let served = lab.users_served_by_kind();
    let http = ["http4", "http6"].map(|k| served[k]);
    let (ok, started) = http.iter().fold((0, 0), |(a, b), (ok, n)| (a + ok, b + n));
    eprintln!("issue15: SYN proxy: HTTP requests completed during the flood: {ok} of {started}");
    assert!(syns > 100_000, "a flood reached the victim: {syns} SYNs");
    assert!(held >= 0.9, "{:.1} % held back", held * 100.0);
    assert!(
        held_on >= 0.98,
        "{:.2} % held back by the proxy",
        held_on * 100.0
    );
    assert!(
        syns6 > 50_000,
        "an IPv6 flood reached the victim: {syns6} SYNs"
    );
    assert!(held6 >= 0.9, "IPv6: {:.1} % held back", held6 * 100.0);
    assert!(started > 0 && ok * 10 >= started * 9, "{ok} of {started}");

    let removed = wait_event(
        &agent,
        "mitigation_removed",
        "synproxy",
        Duration::from_secs(20),
    );
    assert_eq!(removed["port"], 80, "{removed}");
    assert_eq!(tcp_loose(&lab), loose_before, "put back");
    let dump = agent.dump();
    let set = dump
        .split("\tset ")
        .find(|s| s.starts_with("syn_proxy "))
        .unwrap();
    assert!(!set.contains("elements"), "the port is out: {set}");
}
