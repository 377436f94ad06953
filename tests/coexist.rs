//! Issue 6: ftagent beside the real Fail2Ban, in the lab's victim namespace, for each of
//! Fail2Ban's actions (iptables-multiport on iptables-legacy and on iptables-nft, nftables).
//! Fail2Ban bans a "credential attacker"; ftagent then goes through a whole flood incident
//! (ban → undo), Fail2Ban restarts mid-incident, ftagent restarts, and `rules flush` ends it.
//! Throughout, Fail2Ban's ban keeps blocking its address; at each step, `iptables-save` of both
//! backends and `nft list table inet f2b-table` are byte-identical to the step before but for
//! ftagent's own lines, and after the flush byte-identical to what Fail2Ban last made of them
//! (its restart moves its jump to the top of INPUT: that reordering is Fail2Ban's). While ftagent runs, `iptables -L -n` (of the backend in use) shows both
//! `Chain f2b-ftest` and `Chain FTAGENT`, the latter with one set-match rule per family; the
//! flood source is dropped even though the admin's own iptables rule would ACCEPT it, and the
//! ipset mirror holds the ban with a timeout.

use std::time::Duration;

use serde_json::Value;

use crate::agent::{Agent, Setup};
use crate::lab::fail2ban::{
    iptables_list, iptables_save, nft_list_f2b, normalise, require, ssh_connects, ssh_listener,
    F2bAction, Fail2Ban, IPTABLES_CHAIN, MAX_RETRY,
};
use crate::lab::{self, Lab, Netns, UdpFlood, ATTACKER4, ATTACKER6, OTHER4, VICTIM4};

const SECTIONS: &str = "[[service]]\nport = 27015\nproto = \"udp\"\n\n[[service]]\nport = 22\n\n\
    [sense]\nconntrack_interval = \"1s\"\n\n[detection]\nhold = \"2s\"\n\n\
    [mitigation]\nmode = \"mitigate\"\n";
const FLOOD_PACKETS: u64 = 400_000;
const FLOOD_PPS: u64 = 50_000;
const BAN_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn issue6_beside_fail2ban_on_iptables_legacy() {
    beside_fail2ban(
        "issue6_beside_fail2ban_on_iptables_legacy",
        F2bAction::IptablesMultiportLegacy,
    );
}

#[test]
fn issue6_beside_fail2ban_on_iptables_nft() {
    beside_fail2ban(
        "issue6_beside_fail2ban_on_iptables_nft",
        F2bAction::IptablesMultiportNft,
    );
}

#[test]
fn issue6_beside_fail2ban_with_the_nftables_action() {
    beside_fail2ban(
        "issue6_beside_fail2ban_with_the_nftables_action",
        F2bAction::Nftables,
    );
}

/// Every listing the issue compares, normalised (no counters, no dates).
#[derive(Debug, PartialEq)]
struct Listings {
    legacy4: String,
    legacy6: String,
    nft4: String,
    nft6: String,
    f2b_table: String,
}

fn listings(ns: &Netns) -> Listings {
    // `-save` never creates a table, so reading cannot change what is read.
    Listings {
        legacy4: normalise(&iptables_save(ns, true, false)),
        legacy6: normalise(&iptables_save(ns, true, true)),
        nft4: normalise(&iptables_save(ns, false, false)),
        nft6: normalise(&iptables_save(ns, false, true)),
        f2b_table: normalise(&nft_list_f2b(ns)),
    }
}

/// The same listings without ftagent's own lines (its chain, rules and jump).
fn without_ours(l: &Listings) -> Listings {
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("FTAGENT"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    Listings {
        legacy4: strip(&l.legacy4),
        legacy6: strip(&l.legacy6),
        nft4: strip(&l.nft4),
        nft6: strip(&l.nft6),
        f2b_table: strip(&l.f2b_table),
    }
}

/// Our lines of one listing, and the members (without timeouts) of our address ipsets.
fn ours(ns: &Netns, legacy: bool) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    for v6 in [false, true] {
        lines.extend(
            iptables_save(ns, legacy, v6)
                .lines()
                .filter(|l| l.contains("FTAGENT"))
                .map(|l| normalise(l).trim().to_string()),
        );
    }
    (lines, ipset_members(ns))
}

/// `ADDRESS` of each element of our four address ipsets, sorted.
fn ipset_members(ns: &Netns) -> Vec<String> {
    let mut members = Vec::new();
    for set in ["ftagent-ip4", "ftagent-ip6", "ftagent-net4", "ftagent-net6"] {
        let out = ns.run(&["ipset", "list", set]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        members.extend(
            text.split("Members:\n")
                .nth(1)
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(|a| format!("{set} {a}")),
        );
    }
    members.sort();
    members
}

/// The banned addresses and prefixes in our nft ban sets, sorted.
fn nft_bans(ns: &Netns) -> Vec<String> {
    let mut bans = Vec::new();
    for set in ["ban4", "ban6", "bannet4", "bannet6"] {
        let out = ns.run_ok(&["nft", "list", "set", "inet", "ftagent", set]);
        if let Some(elements) = out.split("elements = {").nth(1) {
            let elements = elements.split('}').next().unwrap_or("");
            bans.extend(
                elements
                    .split(',')
                    .filter_map(|e| e.split_whitespace().next())
                    .map(str::to_string),
            );
        }
    }
    bans.sort();
    bans
}

/// The seconds left on `addr` in an ipset, as `ipset list` reports it.
fn ipset_timeout(ns: &Netns, set: &str, addr: &str) -> Option<u64> {
    let out = ns.run_ok(&["ipset", "list", set]);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{addr} timeout ")))
        .and_then(|t| t.trim().parse().ok())
}

/// Packets the admin's ACCEPT rule for `src` (first in INPUT) has matched.
fn accept_rule_packets(ns: &Netns, legacy: bool, src: &str) -> u64 {
    let prog = if legacy {
        "iptables-legacy"
    } else {
        "iptables-nft"
    };
    let out = ns.run_ok(&[prog, "-w", "-L", "INPUT", "-v", "-x", "-n"]);
    out.lines()
        .find(|l| l.contains("ACCEPT") && l.contains(src))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the admin's ACCEPT rule for {src}: {out}"))
}

fn f2b_blocks(lab: &Lab, when: &str) {
    assert!(
        !ssh_connects(&lab.attacker, OTHER4, VICTIM4, CONNECT_TIMEOUT),
        "Fail2Ban's ban of {OTHER4} must keep blocking port 22 {when}"
    );
}

fn find(agent: &Agent, name: &str) -> Option<Value> {
    agent.all_events().into_iter().find(|e| e["event"] == name)
}

fn wait_for(agent: &Agent, name: &str, timeout: Duration) -> Value {
    lab::wait_until(timeout, name, || find(agent, name).is_some());
    find(agent, name).unwrap()
}

fn beside_fail2ban(test: &str, action: F2bAction) {
    if !require(test, action) {
        return;
    }
    let Some((_serial, lab)) = lab::start(test) else {
        return;
    };
    let victim = &lab.victim;
    // The backend the host's tools use: where Fail2Ban's chains are, else iptables-nft.
    let legacy = action.legacy().unwrap_or(false);
    let _sshd = ssh_listener(victim);

    // Fail2Ban bans a credential attacker (10.250.0.3) before ftagent is there.
    let mut f2b = Fail2Ban::start(victim, lab.dir(), action);
    f2b.fail_logins(OTHER4, MAX_RETRY);
    assert!(
        f2b.wait_banned(OTHER4, BAN_TIMEOUT),
        "Fail2Ban did not ban {OTHER4}: {}",
        f2b.log()
    );
    f2b_blocks(&lab, "before ftagent starts");
    // The admin's own rules would accept everything from the flood source.
    let admin = if legacy { "legacy" } else { "nft" };
    victim.run_ok(&[
        &format!("iptables-{admin}"),
        "-w",
        "-I",
        "INPUT",
        "1",
        "-s",
        ATTACKER4,
        "-j",
        "ACCEPT",
    ]);
    victim.run_ok(&[
        &format!("ip6tables-{admin}"),
        "-w",
        "-I",
        "INPUT",
        "1",
        "-s",
        ATTACKER6,
        "-j",
        "ACCEPT",
    ]);
    let before = listings(victim);

    let setup = Setup {
        agent: "warmup = \"3s\"",
        sections: SECTIONS,
        ..Setup::default()
    };
    let mut agent = Agent::configured(&lab, setup);
    agent.start();
    lab.ping(ATTACKER4, VICTIM4, 100);
    std::thread::sleep(Duration::from_secs(2));

    // Both chains show in `iptables -L -n` of the backend in use, ours in no other backend.
    let list = iptables_list(victim, legacy, false);
    if action != F2bAction::Nftables {
        assert!(list.contains(&format!("Chain {IPTABLES_CHAIN}")), "{list}");
    }
    assert!(list.contains("Chain FTAGENT"), "{list}");
    assert!(
        !iptables_save(victim, !legacy, false).contains("FTAGENT"),
        "FTAGENT only in the backend in use"
    );
    for v6 in [false, true] {
        let save = iptables_save(victim, legacy, v6);
        let rules: Vec<&str> = save
            .lines()
            .filter(|l| l.starts_with("-A FTAGENT"))
            .collect();
        assert_eq!(rules.len(), 1, "one set-match rule per family: {save}");
        assert!(rules[0].contains("--match-set ftagent-ban"), "{save}");
        let jumps = save.lines().filter(|l| *l == "-A INPUT -j FTAGENT").count();
        assert_eq!(jumps, 1, "one jump: {save}");
    }
    assert_eq!(
        without_ours(&listings(victim)),
        before,
        "ftagent's start changed only its own lines"
    );

    // A flood from the source the admin's rule accepts: banned, dropped before iptables.
    let flood = UdpFlood {
        src: ATTACKER4,
        dst: VICTIM4,
        sport: 40000,
        dport: Some(27015),
        payload: 64,
    };
    let generator = lab.udp_flood(&flood, FLOOD_PACKETS, FLOOD_PPS);
    wait_for(&agent, "attack_start", Duration::from_secs(10));
    let applied = wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    assert_eq!(applied["addresses"][0], ATTACKER4, "{applied}");
    let left = ipset_timeout(victim, "ftagent-ip4", ATTACKER4);
    assert!(
        left.is_some_and(|t| t > 0),
        "the ipset mirror holds the ban with a timeout: {:?}",
        victim.run(&["ipset", "list", "ftagent-ip4"])
    );
    let mirrored: Vec<String> = ipset_members(victim)
        .iter()
        .map(|m| m.split_whitespace().nth(1).unwrap_or("").to_string())
        .collect();
    assert_eq!(
        mirrored,
        nft_bans(victim),
        "the ipsets hold the same elements as our nft sets"
    );
    eprintln!(
        "issue6: {action:?}: ban mirrored, {} s left in ftagent-ip4",
        left.unwrap_or(0)
    );
    std::thread::sleep(Duration::from_millis(500));
    let (accepted_at_ban, rx_at_ban) = (
        accept_rule_packets(victim, legacy, ATTACKER4),
        lab.victim_rx_packets(),
    );
    f2b_blocks(&lab, "during ftagent's incident");

    // Fail2Ban restarts (re-creating its chains) mid-incident: nothing of ours changes.
    let ours_before = ours(victim, legacy);
    assert!(
        ours_before.1.contains(&format!("ftagent-ip4 {ATTACKER4}")),
        "{ours_before:?}"
    );
    f2b.restart();
    assert!(
        f2b.wait_banned(OTHER4, BAN_TIMEOUT),
        "Fail2Ban restored its ban"
    );
    assert_eq!(
        ours(victim, legacy),
        ours_before,
        "Fail2Ban's restart left ours alone"
    );
    f2b_blocks(&lab, "after Fail2Ban's restart");

    generator.finish(Duration::from_secs(60));
    lab.assert_users_served(0.95);
    let accepted = accept_rule_packets(victim, legacy, ATTACKER4) - accepted_at_ban;
    let received = lab.victim_rx_packets() - rx_at_ban;
    eprintln!("issue6: {action:?}: after the ban the admin's ACCEPT rule matched {accepted} of {received} flood packets received");
    assert!(
        received > 10_000 && accepted * 100 <= received,
        "the banned flood is dropped before the admin's ACCEPT rule: it matched {accepted} of {received} packets received after the ban"
    );

    // The incident ends: the ban is lifted from the nft set and the ipset alike.
    wait_for(&agent, "mitigation_removed", Duration::from_secs(20));
    lab::wait_until(Duration::from_secs(3), "the ipset unban", || {
        ipset_timeout(victim, "ftagent-ip4", ATTACKER4).is_none()
    });

    // ftagent restarting changes nothing of Fail2Ban's.
    let f2b_only = without_ours(&listings(victim));
    agent.stop();
    agent.start();
    assert_eq!(
        without_ours(&listings(victim)),
        f2b_only,
        "ftagent's restart left Fail2Ban alone"
    );
    f2b_blocks(&lab, "after ftagent's restart");

    // `rules flush`: ours is gone, everything else is as it was before ftagent started.
    let flushed = agent.run_ok(&["rules", "flush"]);
    assert!(flushed.contains("removed"), "{flushed}");
    let daemon = agent.daemon.as_mut().expect("daemon");
    assert!(
        daemon.wait_timeout(Duration::from_secs(10)).is_some(),
        "the daemon stops after a flush"
    );
    agent.daemon = None;
    lab::wait_until(Duration::from_secs(5), "the iptables chain to go", || {
        !iptables_save(victim, legacy, false).contains("FTAGENT")
    });
    // Fail2Ban's restart re-inserted its jump at the top of INPUT (its own doing): so the
    // reference from then on is what Fail2Ban left, which ftagent's restart did not change.
    assert_eq!(listings(victim), f2b_only, "byte-identical after the flush");
    let sets = victim.run_ok(&["ipset", "list", "-n"]);
    assert!(!sets.contains("ftagent"), "our ipsets are gone: {sets}");
    f2b_blocks(&lab, "after ftagent's flush");
    f2b.stop();
}
