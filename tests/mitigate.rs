//! Issue 5 (first part): concentrated floods are mitigated by banning their sources — within a
//! tick of `attack_start`, cutting what reaches the victim by ≥ 90 % against the same flood
//! unmitigated (monitor mode, which touches nothing) — and the bans are lifted when the
//! incident ends; a safelisted source is never banned. IPv4 and IPv6.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::agent::{Agent, Setup};
use crate::lab::{self, Lab, UdpFlood, ATTACKER4, ATTACKER6, OTHER4, VICTIM4, VICTIM6};

const SECTIONS: &str =
    "[[service]]\nport = 27015\nproto = \"udp\"\n\n[detection]\nhold = \"2s\"\n\n";
const FLOOD_PACKETS: u64 = 500_000;
const FLOOD_PPS: u64 = 50_000;

fn setup(test: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Lab)> {
    if !lab::require_root(test) {
        return None;
    }
    let guard = lab::serial();
    Some((guard, Lab::new(test)))
}

fn start<'a>(lab: &'a Lab, mode: &str, safelist: &'a [&'a str]) -> Agent<'a> {
    let sections = format!("{SECTIONS}[mitigation]\nmode = \"{mode}\"\n");
    let sections: &'static str = Box::leak(sections.into_boxed_str());
    let mut agent = Agent::configured(
        lab,
        Setup {
            agent: "warmup = \"3s\"",
            safelist,
            sections,
            ..Setup::default()
        },
    );
    agent.start();
    lab.ping(ATTACKER4, VICTIM4, 100);
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

/// The set elements of a dump (what mitigation changes), without counters.
fn elements(dump: &str) -> Vec<String> {
    dump.lines()
        .filter(|l| l.contains("elements") || l.starts_with("\t\t\t "))
        .map(str::to_string)
        .collect()
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
    lab.trafgen_udp(&flood, FLOOD_PACKETS, Some(FLOOD_PPS));
    lab.arrivals(src) - before
}

fn single_source_flood_is_banned(test: &str, src: &str, dst: &str, set: &str) {
    let Some((_guard, lab)) = setup(test) else {
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
    let generator = lab.spawn_trafgen(&flood, FLOOD_PACKETS, Some(FLOOD_PPS));
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
    let out = generator.finish(Duration::from_secs(60));
    assert!(out.status.success());
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
    let Some((_guard, lab)) = setup("mitigate-safe") else {
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
    let generator = lab.spawn_trafgen(&flood, 150_000, Some(FLOOD_PPS));
    wait_for(&agent, "attack_start", Duration::from_secs(10));
    generator.finish(Duration::from_secs(60));
    assert!(
        find(&agent, "mitigation_applied").is_none(),
        "{:?}",
        agent.all_events()
    );
    assert!(!agent.dump().contains(&format!("{OTHER4} timeout")));
}
