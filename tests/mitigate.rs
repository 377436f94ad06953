//! Issue 5: mitigation in the real kernel. A concentrated flood's source is banned within a
//! tick of `attack_start`, cutting what reaches the victim by ≥ 90 % against the same flood
//! unmitigated (monitor mode, which touches nothing), and unbanned when the incident ends
//! (IPv4 and IPv6); a safelisted source is never banned; a distributed flood is held to the
//! port limit; a SYN flood gets SYN cookies; amplification is dropped by reflector port while
//! the host's own DNS works; a Slowloris source is held to its connection count. Issue 14: an
//! agent started while a flood is running bans it during its warm-up.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::agent::{dump_counter, Agent, Setup};
use crate::lab::{
    self, Lab, UdpFlood, ATTACKER4, ATTACKER6, OTHER4, VICTIM4, VICTIM6, VICTIM_USERS_IF,
};

const SECTIONS: &str =
    "[[service]]\nport = 27015\nproto = \"udp\"\n\n[[service]]\nport = 80\nproto = \"tcp\"\n\n\
    [sense]\nconntrack_interval = \"1s\"\n\n[detection]\nhold = \"2s\"\n\n";
const FLOOD_PACKETS: u64 = 500_000;
const FLOOD_PPS: u64 = 50_000;

/// The agent in `mode`, warmed up on light traffic from the attacker's address.
fn start<'a>(lab: &'a Lab, mode: &str, safelist: &[&str]) -> Agent<'a> {
    warmed_up(lab, safelist, &format!("mode = \"{mode}\""), ATTACKER4)
}

/// The agent with more `[mitigation]` keys, after a 3 s warm-up on light traffic from
/// `warm_from`.
fn warmed_up<'a>(lab: &'a Lab, safelist: &[&str], mitigation: &str, warm_from: &str) -> Agent<'a> {
    let sections = format!("{SECTIONS}[mitigation]\n{mitigation}\n");
    let setup = Setup {
        agent: "warmup = \"3s\"",
        safelist,
        sections: &sections,
        ..Setup::default()
    };
    let mut agent = Agent::configured(lab, setup);
    agent.start();
    lab.ping(warm_from, VICTIM4, 100);
    std::thread::sleep(Duration::from_secs(2));
    agent
}

fn find(agent: &Agent, name: &str) -> Option<Value> {
    agent.all_events().into_iter().find(|e| e["event"] == name)
}

fn wait_for(agent: &Agent, name: &str, timeout: Duration) -> Value {
    lab::wait_until(timeout, name, || find(agent, name).is_some());
    find(agent, name).unwrap()
}

fn ts(e: &Value) -> SystemTime {
    humantime::parse_rfc3339(e["ts"].as_str().unwrap()).unwrap()
}

/// The set elements of a dump (what mitigation changes), without counters, and without the
/// elements the kernel's own rules add (the meters and the tripwire's sets: `flags dynamic`).
fn elements(dump: &str) -> Vec<String> {
    let mut dynamic = false;
    let mut out = Vec::new();
    for line in dump.lines() {
        let t = line.trim();
        if t.starts_with("set ") || t.starts_with("map ") {
            dynamic = false;
        }
        if t.starts_with("flags ") && t.contains("dynamic") {
            dynamic = true;
        }
        if !dynamic && (line.contains("elements") || line.starts_with("\t\t\t ")) {
            out.push(line.to_string());
        }
    }
    out
}

/// Floods from `src` and returns how many of its packets reached the victim's stack.
fn flood_arrivals(lab: &Lab, src: &str, dst: &str) -> u64 {
    let before = lab.arrivals(src);
    let flood = UdpFlood {
        src,
        dst,
        sport: 40000,
        dport: Some(27015),
        payload: 64,
    };
    lab.udp_flood(&flood, FLOOD_PACKETS, FLOOD_PPS)
        .finish(Duration::from_secs(60));
    lab.arrivals(src) - before
}

fn single_source_flood_is_banned(test: &str, src: &str, dst: &str, set: &str) {
    let Some((_guard, lab)) = lab::start(test) else {
        return;
    };
    lab.count_arrivals();

    // The same flood, unmitigated: monitor mode reports and touches nothing.
    let mut monitor = start(&lab, "monitor", &["10.250.9.0/24"]);
    let before = elements(&monitor.dump());
    let unmitigated = flood_arrivals(&lab, src, dst);
    let reported = wait_for(&monitor, "mitigation_applied", Duration::from_secs(5));
    assert_eq!(reported["mode"], "monitor", "{reported}");
    assert_eq!(reported["addresses"][0], src, "{reported}");
    assert_eq!(
        elements(&monitor.dump()),
        before,
        "monitor mode changed no set"
    );
    wait_for(&monitor, "attack_end", Duration::from_secs(15));
    monitor.stop();

    let agent = start(&lab, "mitigate", &["10.250.9.0/24"]);
    let flood = UdpFlood {
        src,
        dst,
        sport: 40000,
        dport: Some(27015),
        payload: 64,
    };
    let arrivals_before = lab.arrivals(src);
    let generator = lab.udp_flood(&flood, FLOOD_PACKETS, FLOOD_PPS);
    let started = wait_for(&agent, "attack_start", Duration::from_secs(10));
    let applied = wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    let dump = agent.dump();
    let in_set = dump
        .split("\tset ")
        .find(|s| s.starts_with(&format!("{set} ")))
        .unwrap_or("");
    assert!(
        in_set.contains(&format!("{src} timeout 10m")),
        "{src} banned in {set}: {dump}"
    );
    let delay = ts(&applied)
        .duration_since(ts(&started))
        .unwrap_or_default();
    eprintln!(
        "issue5: {src}: ban {} ms after attack_start",
        delay.as_millis()
    );
    assert!(
        delay <= Duration::from_millis(150),
        "within a tick of attack_start: {delay:?}"
    );
    assert_eq!(applied["incident"], started["incident"]);
    generator.finish(Duration::from_secs(60));
    lab.assert_users_served(0.95);
    let mitigated = lab.arrivals(src) - arrivals_before;
    let reduction = 1.0 - mitigated as f64 / unmitigated as f64;
    eprintln!("issue5: {src}: {unmitigated} packets arrived unmitigated, {mitigated} mitigated ({:.1} % less)", reduction * 100.0);
    assert!(reduction >= 0.90, "{mitigated} of {unmitigated}");

    let removed = wait_for(&agent, "mitigation_removed", Duration::from_secs(20));
    assert_eq!(removed["addresses"][0], src);
    assert!(
        !agent.dump().contains(&format!("{src} timeout")),
        "the ban is lifted"
    );
}

#[test]
fn issue5_single_source_udp_flood_is_banned_ipv4() {
    single_source_flood_is_banned("mitigate-v4", ATTACKER4, VICTIM4, "ban4");
}

#[test]
fn issue5_single_source_udp_flood_is_banned_ipv6() {
    single_source_flood_is_banned("mitigate-v6", ATTACKER6, VICTIM6, "ban6");
}

#[test]
fn issue5_a_safelisted_source_is_never_banned() {
    let Some((_guard, lab)) = lab::start("mitigate-safe") else {
        return;
    };
    let agent = start(&lab, "mitigate", &[OTHER4]);
    let flood = UdpFlood {
        src: OTHER4,
        dst: VICTIM4,
        sport: 40000,
        dport: Some(27015),
        payload: 64,
    };
    let generator = lab.udp_flood(&flood, 150_000, FLOOD_PPS);
    wait_for(&agent, "attack_start", Duration::from_secs(10));
    // Not a ban: the aggregate measure for its port instead.
    let applied = wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    assert_eq!(applied["action"], "limit_port", "{applied}");
    generator.finish(Duration::from_secs(60));
    lab.assert_users_served(0.95);
    let bans: Vec<Value> = agent
        .all_events()
        .into_iter()
        .filter(|e| e["action"] == "ban")
        .collect();
    assert!(bans.is_empty(), "{bans:?}");
    assert!(!agent.dump().contains(&format!("{OTHER4} timeout")));
}

/// Counts packets to a UDP port that reach the victim's stack (an input-hook counter in a
/// table of the test's own).
fn count_port(lab: &Lab, port: u16) {
    let rule = format!("add rule inet portcount input udp dport {port} counter");
    lab.victim.run_ok(&["nft", "add table inet portcount"]);
    lab.victim.run_ok(&[
        "nft",
        "add chain inet portcount input { type filter hook input priority 0 ; }",
    ]);
    lab.victim.run_ok(&["nft", &rule]);
}

fn port_arrivals(lab: &Lab) -> u64 {
    let json = lab
        .victim
        .run_ok(&["nft", "-j", "list", "table", "inet", "portcount"]);
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

#[test]
fn issue5_distributed_flood_is_held_to_the_port_limit_not_banned() {
    let Some((_guard, lab)) = lab::start("mitigate-ddos") else {
        return;
    };
    lab.count_arrivals();
    count_port(&lab, 27015);
    let agent = warmed_up(&lab, &[], "port_limit_pps = 2000", OTHER4);
    let before = port_arrivals(&lab);
    let generator = lab.distributed_udp(27015, 300_000, FLOOD_PPS);
    let start = wait_for(&agent, "attack_start", Duration::from_secs(10));
    assert_eq!(
        (start["vector"].as_str(), start["concentrated"].as_bool()),
        (Some("udp_flood"), Some(false)),
        "{start}"
    );
    let applied = wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    assert_eq!(
        (applied["action"].as_str(), applied["port"].as_u64()),
        (Some("limit_port"), Some(27015)),
        "{applied}"
    );
    // A legitimate client on another port is not held back.
    let other = lab.arrivals(OTHER4);
    lab.ping(OTHER4, VICTIM4, 50);
    assert_eq!(lab.arrivals(OTHER4) - other, 50);
    let sent = generator.finish(Duration::from_secs(60));
    let flood_time = sent.elapsed;
    let sent = sent.packets;
    let arrived = port_arrivals(&lab) - before;
    // At most the limit for the flood's length, plus what came before the limit was on.
    let allowed = 2000.0 * flood_time.as_secs_f64() + 0.25 * sent as f64;
    eprintln!(
        "issue5: distributed flood: {arrived} of {sent} packets reached udp/27015 (limit 2000 pps)"
    );
    assert!(
        (arrived as f64) < allowed,
        "{arrived} arrived, at most {allowed} expected"
    );
    assert!(
        arrived as f64 > 2000.0 * flood_time.as_secs_f64() * 0.5,
        "the port stays served: {arrived}"
    );
    let dump = agent.dump();
    let ban4 = dump
        .split("\tset ")
        .find(|s| s.starts_with("ban4 "))
        .unwrap();
    assert!(!ban4.contains("elements"), "no single bans: {ban4}");
    let removed = wait_for(&agent, "mitigation_removed", Duration::from_secs(20));
    assert_eq!(removed["action"], "limit_port");
}

#[test]
fn issue5_syn_flood_engages_syn_cookies_and_clients_still_connect() {
    let Some((_guard, lab)) = lab::start("mitigate-syn") else {
        return;
    };
    lab.set_syncookies("0");
    // The victim's SYN-ACKs to the spoofed lab sources go to the attacker namespace, which
    // does not forward them: half-open connections fill the listen queue, as in the wild
    // (measured here: without SYN cookies 3 of 5 requests completed during such a flood).
    lab.victim
        .run_ok(&["ip", "route", "add", "10.250.0.0/16", "via", ATTACKER4]);
    // The users' HTTP server answers on :80. SYN cookies are the fallback where the kernel has
    // no SYN proxy (or it is off, as here); the proxy itself: `synproxy`.
    let agent = warmed_up(&lab, &[], "synproxy = false", OTHER4);
    let generator = lab.syn_flood_spoofed(80, 200_000, 20_000);
    let start = wait_for(&agent, "attack_start", Duration::from_secs(10));
    assert_eq!(start["vector"], "syn_flood", "{start}");
    let applied = wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    assert_eq!(applied["action"], "syn_cookies", "{applied}");
    assert_eq!(lab.syncookies(), "1");
    let served = (0..5)
        .filter(|_| lab.http_get(OTHER4, 80, Duration::from_secs(3)))
        .count();
    eprintln!("issue5: SYN flood: {served} of 5 HTTP requests completed during the flood");
    assert!(served >= 4, "{served} of 5");
    generator.finish(Duration::from_secs(60));
    wait_for(&agent, "mitigation_removed", Duration::from_secs(20));
    assert_eq!(lab.syncookies(), "0", "put back");
}

#[test]
fn issue5_amplification_is_dropped_by_source_port_and_dns_still_works() {
    let Some((_guard, lab)) = lab::start("mitigate-amp") else {
        return;
    };
    let _dns = lab.dns_server();
    let agent = warmed_up(&lab, &[], "", OTHER4);
    assert!(lab.dns_query("before.lab"), "the resolver answers");
    let generator = lab.amplification(53, 1200, 160_000, 20_000);
    let start = wait_for(&agent, "attack_start", Duration::from_secs(10));
    assert_eq!(start["vector"], "dns_amplification", "{start}");
    let applied = wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    assert_eq!(
        (applied["action"].as_str(), applied["port"].as_u64()),
        (Some("block_reflector"), Some(53)),
        "{applied}"
    );
    let answered = (0..5)
        .filter(|i| lab.dns_query(&format!("during{i}.lab")))
        .count();
    assert_eq!(
        answered, 5,
        "the host's own queries are answered during the flood"
    );
    let sent = generator.finish(Duration::from_secs(60));
    lab.assert_users_served(0.95);
    let dump = agent.dump();
    let dropped = dump_counter(&dump, "drop_amp_block").unwrap();
    eprintln!("issue5: amplification: {dropped} reflected packets dropped by the source-port rule");
    assert!(
        dropped * 10 > sent.packets * 6,
        "{dropped} of {sent:?}: {dump}"
    );
    assert!(
        !dump.contains(&format!("{ATTACKER4} timeout")),
        "a reflector is not banned"
    );
}

#[test]
fn issue5_slowloris_source_is_limited_and_others_get_pages() {
    let Some((_guard, lab)) = lab::start("mitigate-slow") else {
        return;
    };
    // The users' HTTP server answers on :80.
    let agent = warmed_up(&lab, &[], "", OTHER4);
    let held_from = SystemTime::now();
    let _holder = lab.hold_connections(ATTACKER4, VICTIM4, 80, 300, Duration::from_secs(30));
    let start = wait_for(&agent, "attack_start", Duration::from_secs(15));
    assert_eq!(start["vector"], "slowloris", "{start}");
    let applied = wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    let what = (applied["action"].as_str(), applied["port"].as_u64());
    assert_eq!(what, (Some("limit_connections"), Some(80)), "{applied}");
    assert!(
        lab.http_get(OTHER4, 80, Duration::from_secs(3)),
        "a second client still gets pages"
    );
    // The kernel counts the connections it sees opened once the measure is on: however many
    // the holder had opened by then, it gets no more than `max_connections_per_source` (100)
    // beyond. 120 attempts at once, 1 s to complete.
    let script = format!(
        "import socket, select, time\nsocks = []\nfor _ in range(120):\n    s = socket.socket()\n    s.setblocking(False)\n    s.bind(('{ATTACKER4}', 0))\n    s.connect_ex(('{VICTIM4}', 80))\n    socks.append(s)\ntime.sleep(1)\n_, ready, _ = select.select([], socks, [], 0)\nprint(sum(1 for s in ready if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0))\n"
    );
    let opened: u32 = lab
        .attacker
        .run_ok(&["python3", "-c", &script])
        .trim()
        .parse()
        .unwrap();
    eprintln!("issue5: slowloris: the holder opened {opened} of 120 more connections (limit 100)");
    assert!(opened <= 100, "{opened}");
    let dump = agent.dump();
    let conns4 = dump
        .split("\tset ")
        .find(|s| s.starts_with("conns4 "))
        .unwrap();
    assert!(
        conns4.contains(ATTACKER4),
        "the kernel counts the holder's connections: {conns4}"
    );
    lab.assert_users_served_between(held_from, SystemTime::now(), 0.95);
}

/// The victim's count of fragments handed to reassembly (`IpReasmReqds`, `Ip6ReasmReqds`).
fn reassembly_requests(lab: &Lab, v6: bool) -> u64 {
    let name = if v6 { "Ip6ReasmReqds" } else { "IpReasmReqds" };
    lab.victim_nstat(&[name])[0]
}

/// Issue 14, item 2 (issue 13's lab): a flood of fragments that never complete is counted
/// and mitigated in our early chain, before the kernel's reassembly: detected as
/// `fragment_flood`, at least 90 % of what the victim received dropped there (IPv4: and never
/// handed to reassembly; IPv6's netfilter reassembly keeps no such count), and none of the
/// users, whose traffic is all the sampler sees during it, banned.
fn fragment_flood_is_dropped_before_reassembly(test: &str, src: &str, dst: &str) {
    let Some((_guard, lab)) = lab::start(test) else {
        return;
    };
    let v6 = dst.contains(':');
    let agent = start(&lab, "mitigate", &["10.250.9.0/24"]);
    let reassembly = reassembly_requests(&lab, v6);
    let rx = lab.victim_rx_packets();
    let generator = lab.fragment_flood(src, dst, 90_000, 30_000);
    let start = wait_for(&agent, "attack_start", Duration::from_secs(10));
    assert_eq!(start["vector"], "fragment_flood", "{start}");
    let applied = wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    generator.finish(Duration::from_secs(60));
    let received = lab.victim_rx_packets() - rx;
    let reassembled = reassembly_requests(&lab, v6) - reassembly;
    eprintln!(
        "issue14: {test}: {received} fragments received, {reassembled} handed to reassembly; \
         attack_start {start}; mitigation: {applied}\n{}",
        agent.dump()
    );
    lab.assert_users_served(0.95);
    assert!(
        reassembled * 10 <= received,
        "at most 10 % reach reassembly: {reassembled} of {received}"
    );
    let dump = agent.dump();
    assert!(
        dump_counter(&dump, "fragment").unwrap() >= received * 9 / 10,
        "the early chain counts the fragments: {dump}"
    );
    let dropped: u64 = [
        "drop_limit_frag",
        "drop_ban4",
        "drop_ban6",
        "drop_bannet4",
        "drop_bannet6",
    ]
    .iter()
    .map(|c| dump_counter(&dump, c).unwrap())
    .sum();
    assert!(
        dropped * 10 >= received * 9,
        "at least 90 % dropped before reassembly: {dropped} of {received}"
    );
    for user in lab::USERS4.iter().chain(lab::USERS6.iter()) {
        assert!(
            !dump.contains(&format!("{user} timeout")),
            "{user} banned: {dump}"
        );
    }
}

#[test]
fn issue14_fragment_flood_is_dropped_before_reassembly_ipv4() {
    fragment_flood_is_dropped_before_reassembly("mitigate-frag-v4", ATTACKER4, VICTIM4);
}

#[test]
fn issue14_fragment_flood_is_dropped_before_reassembly_ipv6() {
    fragment_flood_is_dropped_before_reassembly("mitigate-frag-v6", ATTACKER6, VICTIM6);
}

/// What the victim's interfaces receive per second over `window`: from the attacker's veth
/// and from the users'.
fn received_pps(lab: &Lab, window: Duration) -> (f64, f64) {
    let (flood, users) = (
        lab.victim_rx_packets(),
        lab.victim_rx_packets_on(VICTIM_USERS_IF),
    );
    let started = Instant::now();
    std::thread::sleep(window);
    let seconds = started.elapsed().as_secs_f64();
    (
        (lab.victim_rx_packets() - flood) as f64 / seconds,
        (lab.victim_rx_packets_on(VICTIM_USERS_IF) - users) as f64 / seconds,
    )
}

/// Issue 14 (item 6): a full-speed UDP flood is already running when the agent starts, with
/// no state and a warm-up far from over. Its ceiling (this test's config) is a quarter of what
/// the victim receives, and far above the users' traffic: within 2 s of its start it reports
/// the incident `warmed_up: false` and bans the source, whose packets the ban then drops;
/// the users are served throughout.
#[test]
fn issue14_started_under_attack_opens_and_mitigates_during_the_warmup() {
    let Some((_guard, lab)) = lab::start("mitigate-started-under-attack") else {
        return;
    };
    let flood = UdpFlood::to_port(ATTACKER4, VICTIM4, 27015);
    let before = lab.victim_rx_packets();
    let mut generator = lab.spawn_trafgen(&flood, 3_000_000);
    // trafgen may take a while to start on a busy machine: measure once it floods.
    lab.wait_arrival(before, 20_000);
    std::thread::sleep(Duration::from_millis(200));
    let (flood_pps, users_pps) = received_pps(&lab, Duration::from_secs(1));
    let ceiling = (flood_pps / 4.0).round() as u64;
    eprintln!(
        "issue14: started under attack: {flood_pps:.0} pps of flood and {users_pps:.0} pps of \
         users arrive; ceiling {ceiling} pps"
    );
    assert!(
        ceiling as f64 >= 20.0 * users_pps.max(100.0),
        "the flood ({flood_pps:.0} pps) is too slow here to tell from the users ({users_pps:.0} pps)"
    );
    let sections = format!(
        "[[service]]\nport = 27015\nproto = \"udp\"\n\n[[service]]\nport = 80\nproto = \"tcp\"\n\n\
         [sense]\nconntrack_interval = \"1s\"\n\n[detection]\nhold = \"2s\"\nceiling_pps = {ceiling}\n"
    );
    let mut agent = Agent::configured(
        &lab,
        Setup {
            agent: "warmup = \"60s\"",
            sections: &sections,
            ..Setup::default()
        },
    );
    assert!(
        !lab.dir().join("state").exists(),
        "the agent starts with no state"
    );
    let spawned = SystemTime::now();
    agent.start();
    let started = wait_for(&agent, "attack_start", Duration::from_secs(10));
    let applied = wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    let latency = ts(&started).duration_since(spawned).unwrap_or_default();
    eprintln!(
        "issue14: started under attack: attack_start {} ms after the agent was started, the ban {} ms after it",
        latency.as_millis(),
        ts(&applied)
            .duration_since(ts(&started))
            .unwrap_or_default()
            .as_millis()
    );
    assert_eq!(started["warmed_up"], false, "{started}");
    assert_eq!(started["vector"], "udp_flood", "{started}");
    assert_eq!(started["port"], 27015, "{started}");
    assert_eq!(started["threshold_pps"], ceiling as f64, "{started}");
    assert!(latency <= Duration::from_secs(2), "{latency:?}");
    assert_eq!(applied["incident"], started["incident"], "{applied}");
    assert_eq!(applied["action"], "ban", "{applied}");
    assert_eq!(applied["addresses"][0], ATTACKER4, "{applied}");
    // The ban is in its set and drops the flood: nearly all the victim's interface receives.
    let dump = agent.dump();
    assert!(
        dump.contains(&format!("{ATTACKER4} timeout")),
        "{ATTACKER4} banned: {dump}"
    );
    let (dropped, received) = (dump_counter(&dump, "drop_ban4"), lab.victim_rx_packets());
    std::thread::sleep(Duration::from_secs(1));
    let dropped = dump_counter(&agent.dump(), "drop_ban4").unwrap() - dropped.unwrap();
    let received = lab.victim_rx_packets() - received;
    eprintln!("issue14: started under attack: the ban dropped {dropped} of the {received} packets received in a second");
    assert!(
        dropped as f64 >= 0.9 * received as f64 && received as f64 >= 2.0 * ceiling as f64,
        "{dropped} dropped of {received}"
    );
    let status: Value = serde_json::from_str(&agent.run_ok(&["status", "--json"])).unwrap();
    assert_eq!(status["warmed_up"], false, "still warming up");
    generator.terminate();
    lab.assert_users_served(0.95);
}

/// The events of `incident` (its `attack_*` and `mitigation_*` events).
fn of_incident(agent: &Agent, incident: &Value) -> Vec<Value> {
    agent
        .all_events()
        .into_iter()
        .filter(|e| e["incident"] == *incident)
        .collect()
}

/// Issue 14, item 4: a UDP flood from one source and a spoofed SYN flood at once give two
/// incidents, each naming its own senders: the UDP incident names and bans the UDP source;
/// the SYN incident — whose own samples are SYNs from thousands of addresses — names no source
/// and bans nothing (before, sources were shares of all sampled traffic and the SYN incident
/// banned the UDP source). Both name the victim as their target.
#[test]
fn issue14_multi_vector_each_incident_bans_its_own_sources() {
    let Some((_guard, lab)) = lab::start("mitigate-multi") else {
        return;
    };
    let agent = warmed_up(&lab, &[], "", OTHER4);
    let udp = UdpFlood::to_port(ATTACKER4, VICTIM4, 27015);
    let udp_flood = lab.udp_flood(&udp, 150_000, 30_000);
    let syn_flood = lab.syn_flood_spoofed(80, 100_000, 20_000);
    lab::wait_until(Duration::from_secs(10), "two incidents", || {
        agent
            .all_events()
            .iter()
            .filter(|e| e["event"] == "attack_start")
            .count()
            >= 2
    });
    udp_flood.finish(Duration::from_secs(30));
    syn_flood.finish(Duration::from_secs(30));
    lab.assert_users_served(0.95);
    std::thread::sleep(Duration::from_secs(1));
    let starts: Vec<Value> = agent
        .all_events()
        .into_iter()
        .filter(|e| e["event"] == "attack_start")
        .collect();
    let start_of = |vector: &str| {
        starts
            .iter()
            .find(|e| e["vector"] == vector)
            .unwrap_or_else(|| panic!("a {vector} incident: {starts:#?}"))
            .clone()
    };
    let (udp_start, syn_start) = (start_of("udp_flood"), start_of("syn_flood"));
    assert_eq!(starts.len(), 2, "two incidents: {starts:#?}");
    eprintln!("issue14: multi-vector: {udp_start}\n{syn_start}");
    for start in [&udp_start, &syn_start] {
        assert_eq!(start["targets"][0]["addr"], VICTIM4, "{start}");
    }
    let udp_events = of_incident(&agent, &udp_start["incident"]);
    assert_eq!(udp_start["sources"][0]["addr"], ATTACKER4, "{udp_start}");
    let banned = udp_events
        .iter()
        .any(|e| e["action"] == "ban" && e["addresses"][0] == ATTACKER4);
    assert!(banned, "the UDP incident bans its source: {udp_events:#?}");
    let syn_events = of_incident(&agent, &syn_start["incident"]);
    for e in &syn_events {
        assert_ne!(e["action"], "ban", "the SYN incident bans no one: {e}");
        let named = e["sources"].as_array().map_or(0, Vec::len);
        assert_eq!(named, 0, "the SYN incident names no source: {e}");
    }
    let bans_of_attacker = agent
        .all_events()
        .into_iter()
        .filter(|e| e["action"] == "ban" && e["addresses"].to_string().contains(ATTACKER4))
        .filter(|e| e["incident"] != udp_start["incident"])
        .count();
    assert_eq!(
        bans_of_attacker, 0,
        "only the UDP incident bans {ATTACKER4}"
    );
}
