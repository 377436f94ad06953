//! Issue 6 harness self-test: the real Fail2Ban in the lab's victim namespace, no ftagent.
//! Failed sshd logins get a source banned (IPv4 and IPv6), its port 22 is really closed to it
//! and only to it, the rules land in the backend asked for (iptables-legacy, iptables-nft,
//! nftables), and a real restart brings back the very same rules from Fail2Ban's database.

use std::time::{Duration, Instant};

use crate::lab::fail2ban::{
    iptables_list, iptables_save, nft_list_f2b, normalise, require, ssh_connects, ssh_listener,
    F2bAction, Fail2Ban, IPTABLES_CHAIN, MAX_RETRY,
};
use crate::lab::{self, Lab, Netns, ATTACKER4, ATTACKER6, OTHER4, OTHER6, VICTIM4, VICTIM6};

const BAN_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn f2b_iptables_legacy_bans_and_restores() {
    fail2ban_bans_and_restores(
        "f2b_iptables_legacy_bans_and_restores",
        F2bAction::IptablesMultiportLegacy,
    );
}

#[test]
fn f2b_iptables_nft_bans_and_restores() {
    fail2ban_bans_and_restores(
        "f2b_iptables_nft_bans_and_restores",
        F2bAction::IptablesMultiportNft,
    );
}

#[test]
fn f2b_nftables_bans_and_restores() {
    fail2ban_bans_and_restores("f2b_nftables_bans_and_restores", F2bAction::Nftables);
}

fn fail2ban_bans_and_restores(test: &str, action: F2bAction) {
    if !require(test, action) {
        return;
    }
    let Some((_serial, lab)) = lab::start_quiet(test) else {
        return;
    };
    let victim = &lab.victim;
    let _sshd = ssh_listener(victim);
    assert_eq!(reachable(&lab), [true; 4], "port 22 before any ban");

    let t0 = Instant::now();
    let mut f2b = Fail2Ban::start(victim, lab.dir(), action);
    let started = t0.elapsed();
    // Fail2Ban creates its chains and sets on demand, at the first ban of each family.
    assert_no_fail2ban_rules(victim);

    let t0 = Instant::now();
    // One failure short of a ban for the innocent sources.
    f2b.fail_logins(OTHER4, MAX_RETRY - 1);
    f2b.fail_logins(OTHER6, MAX_RETRY - 1);
    f2b.fail_logins(ATTACKER4, MAX_RETRY);
    f2b.fail_logins(ATTACKER6, MAX_RETRY);
    for addr in [ATTACKER4, ATTACKER6] {
        assert!(
            f2b.wait_banned(addr, BAN_TIMEOUT),
            "{addr} not banned within {BAN_TIMEOUT:?}; Fail2Ban's log:\n{}",
            f2b.log()
        );
    }
    let banned_in = t0.elapsed();
    let mut banned = f2b.banned();
    banned.sort();
    assert_eq!(banned, [ATTACKER4, ATTACKER6]);
    assert_rules_in_backend(victim, action);
    assert_eq!(reachable(&lab), [false, false, true, true], "after the ban");

    let before = listing(victim, action);
    let t0 = Instant::now();
    f2b.restart();
    let restarted = t0.elapsed();
    for addr in [ATTACKER4, ATTACKER6] {
        assert!(
            f2b.wait_banned(addr, BAN_TIMEOUT),
            "{addr} not restored within {BAN_TIMEOUT:?}; Fail2Ban's log:\n{}",
            f2b.log()
        );
    }
    let restored = t0.elapsed();
    assert_eq!(listing(victim, action), before, "rules after the restart");
    assert_rules_in_backend(victim, action);
    assert_eq!(reachable(&lab), [false, false, true, true], "after restart");
    let log = f2b.log();
    assert!(
        log.contains(&format!("Restore Ban {ATTACKER4}")),
        "not restored from the database:\n{log}"
    );

    f2b.stop();
    assert_no_fail2ban_rules(victim);
    assert_eq!(reachable(&lab), [true; 4], "after Fail2Ban stopped");
    eprintln!(
        "{test}: Fail2Ban up in {started:?}; 2 sources banned {banned_in:?} after their failed \
         logins were written; restart {restarted:?}, bans back {restored:?} after the restart began"
    );
}

/// Whether VICTIM:22 accepts connections from ATTACKER4, ATTACKER6, OTHER4, OTHER6.
fn reachable(lab: &Lab) -> [bool; 4] {
    [
        (ATTACKER4, VICTIM4),
        (ATTACKER6, VICTIM6),
        (OTHER4, VICTIM4),
        (OTHER6, VICTIM6),
    ]
    .map(|(from, to)| ssh_connects(&lab.attacker, from, to, CONNECT_TIMEOUT))
}

/// Neither backend of either family holds an `f2b-` chain and `table inet f2b-table` is
/// absent. Read with the -save tools only: listing a legacy table with `-L` would instantiate it.
fn assert_no_fail2ban_rules(ns: &Netns) {
    for legacy in [true, false] {
        for v6 in [false, true] {
            let save = iptables_save(ns, legacy, v6);
            assert!(!save.contains("f2b-"), "legacy {legacy}, v6 {v6}:\n{save}");
        }
    }
    assert_eq!(nft_list_f2b(ns), "");
}

/// The rules are where `action` puts them, for both families, and nowhere else.
fn assert_rules_in_backend(ns: &Netns, action: F2bAction) {
    let chain = format!("Chain {IPTABLES_CHAIN} ");
    match action.legacy() {
        Some(legacy) => {
            for v6 in [false, true] {
                let list = iptables_list(ns, legacy, v6);
                assert!(list.contains(&chain), "legacy {legacy}, v6 {v6}:\n{list}");
                let other = iptables_save(ns, !legacy, v6);
                assert!(
                    !other.contains(IPTABLES_CHAIN),
                    "{IPTABLES_CHAIN} also in the other backend (legacy {}, v6 {v6}):\n{other}",
                    !legacy
                );
            }
            let nft = ns.run_ok(&["nft", "list", "ruleset"]);
            let in_nft = nft.contains(&format!("chain {IPTABLES_CHAIN} {{"));
            assert_eq!(in_nft, !legacy, "nft list ruleset:\n{nft}");
            assert_eq!(nft_list_f2b(ns), "");
        }
        None => {
            let table = nft_list_f2b(ns);
            for want in [
                format!("elements = {{ {ATTACKER4} }}"),
                format!("elements = {{ {ATTACKER6} }}"),
                "tcp dport 22 ip saddr @addr-set-ftest reject".to_string(),
                "tcp dport 22 ip6 saddr @addr6-set-ftest reject".to_string(),
            ] {
                assert!(table.contains(&want), "no `{want}` in:\n{table}");
            }
            for legacy in [true, false] {
                for v6 in [false, true] {
                    let save = iptables_save(ns, legacy, v6);
                    assert!(!save.contains("f2b-"), "legacy {legacy}, v6 {v6}:\n{save}");
                }
            }
        }
    }
}

/// What `action` wrote, without counters and dates: both families of its iptables backend,
/// or Fail2Ban's nft table.
fn listing(ns: &Netns, action: F2bAction) -> String {
    match action.legacy() {
        Some(legacy) => {
            normalise(&iptables_save(ns, legacy, false))
                + &normalise(&iptables_save(ns, legacy, true))
        }
        None => normalise(&nft_list_f2b(ns)),
    }
}
