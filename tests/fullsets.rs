//! Issue 15, full sets at every step: 65,536 IPv4 + 65,536 IPv6 operator bans and 16,384
//! prefixes of each family (outside the lab's ranges: 198.18.0.0/15 and 2001:db8::/32) go in
//! with one `ftagent ban --file`, in the older-kernel mode (`nft.compat = "legacy"`, the table not owned) with the ipset mirror on;
//! a restart, `nft flush ruleset` in the victim namespace and a SIGHUP reload that changes a
//! rule keep every one of them, in our nft sets and in the ipsets. Counts are asserted; the
//! time of each step is printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{Agent, Setup};
use crate::lab::{self, Lab, Netns};

/// Address bans per family: the default `ban4_size` and `ban6_size`.
const PER_FAMILY: usize = 65_536;
/// Prefix bans per family: the default `bannet4_size` and `bannet6_size`.
const PREFIXES: usize = 16_384;
/// Every set full: ban4, ban6, bannet4, bannet6, then the ipsets ftagent-ip4, -ip6, -net4, -net6.
const BANS: usize = 2 * (PER_FAMILY + PREFIXES);
const FULL: [usize; 8] = [
    PER_FAMILY, PER_FAMILY, PREFIXES, PREFIXES, PER_FAMILY, PER_FAMILY, PREFIXES, PREFIXES,
];
/// How long a step may take to show every ban (a debug build on a busy 2-core machine).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The older-kernel mode with more sections.
fn setup(sections: &str) -> Setup<'_> {
    Setup {
        compat: "legacy",
        sections,
        ..Setup::default()
    }
}

/// A ban list of `PER_FAMILY` addresses and `PREFIXES` prefixes (none adjacent to another)
/// of each family, with comments and a blank line.
fn write_ban_file(lab: &Lab) -> PathBuf {
    let mut text = String::from("# issue 15: full sets\n\n");
    for i in 0..PER_FAMILY as u32 {
        let v4 = std::net::Ipv4Addr::from(0xc612_0000 + i);
        let v6 = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i));
        text.push_str(&format!("{v4}\n{v6}  # an address\n"));
    }
    for i in 0..PREFIXES as u32 {
        let v4 = std::net::Ipv4Addr::from(0xc613_0000 + 4 * i);
        let v6 = std::net::Ipv6Addr::from(0x2001_0db8_0001_u128 << 80 | u128::from(2 * i) << 64);
        text.push_str(&format!("{v4}/31\n{v6}/64\n"));
    }
    let path = lab.dir().join("bans.txt");
    std::fs::write(&path, text).unwrap();
    path
}

/// Elements in one of our nft sets (each banned element shows `expires`); 0 without a table.
fn nft_count(ns: &Netns, set: &str) -> usize {
    let out = ns.run(&["nft", "list", "set", "inet", "ftagent", set]);
    String::from_utf8_lossy(&out.stdout)
        .matches(" expires ")
        .count()
}

/// Entries in one of our ipsets, as `ipset list -t` reports them.
fn ipset_count(ns: &Netns, set: &str) -> usize {
    let out = ns.run(&["ipset", "list", "-t", set]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Number of entries: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The elements of each set, in the order of `FULL`.
fn counts(ns: &Netns) -> [usize; 8] {
    [
        nft_count(ns, "ban4"),
        nft_count(ns, "ban6"),
        nft_count(ns, "bannet4"),
        nft_count(ns, "bannet6"),
        ipset_count(ns, "ftagent-ip4"),
        ipset_count(ns, "ftagent-ip6"),
        ipset_count(ns, "ftagent-net4"),
        ipset_count(ns, "ftagent-net6"),
    ]
}

/// Waits until every set holds every ban; returns how long that took from `since`.
fn wait_full(ns: &Netns, step: &str, since: Instant) -> Duration {
    lab::wait_until(STEP_TIMEOUT, step, || counts(ns) == FULL);
    since.elapsed()
}

/// Operators' bans in the agent's `mitigation.json`.
fn saved_bans(state_dir: &Path) -> usize {
    std::fs::read_to_string(state_dir.join("mitigation.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["operator_bans"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// How the last reload reached the table, per `status --json` (None: no reload yet, or no
/// answer while the daemon is busy with it).
fn reload_applied(agent: &Agent) -> Option<String> {
    let out = agent.run(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).ok()?;
    status["reload"]["applied"].as_str().map(str::to_string)
}

#[test]
fn issue15_full_sets_survive_restart_restore_reload_and_mirror() {
    let test = "issue15_full_sets_survive_restart_restore_reload_and_mirror";
    let Some((_serial, lab)) = lab::start_quiet(test) else {
        return;
    };
    let victim = &lab.victim;
    let state_dir = lab.dir().join("state");
    let file = write_ban_file(&lab);
    let mut agent = Agent::configured(&lab, setup(""));
    agent.start_within(STEP_TIMEOUT);

    // One `ban --file`: one request, one transaction, mirrored into the ipsets.
    let started = Instant::now();
    let out = agent.run_ok(&["ban", "--file", file.to_str().unwrap(), "--for", "1h"]);
    let ban_took = started.elapsed();
    assert_eq!(
        out.trim(),
        format!("banned {} addresses and prefixes for 1h", BANS)
    );
    assert_eq!(counts(victim), FULL, "after ban --file");
    lab::wait_until(Duration::from_secs(5), "mitigation.json", || {
        saved_bans(&state_dir) == BANS
    });
    let saved_after = started.elapsed();

    // A restart: the table replaced in one transaction, every ban kept, the ipsets refilled.
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    let started = Instant::now();
    agent.start_within(STEP_TIMEOUT);
    let restart_took = wait_full(victim, "every ban after the restart", started);

    // Another process flushes the whole ruleset: our table comes back with every ban.
    let started = Instant::now();
    victim.run_ok(&["nft", "flush", "ruleset"]);
    assert_eq!(nft_count(victim, "ban4"), 0, "the flush removed our table");
    let restore_took = wait_full(victim, "every ban after nft flush ruleset", started);

    // A reload that changes a rule replaces the table, keeping every ban.
    agent.reconfigure(setup("[mitigation]\nport_limit_pps = 999\n"));
    let started = Instant::now();
    agent.daemon.as_ref().unwrap().signal(libc::SIGHUP);
    lab::wait_until(STEP_TIMEOUT, "the reload in status", || {
        reload_applied(&agent).is_some()
    });
    let reload_took = started.elapsed();
    let log = || agent.daemon.as_ref().unwrap().stderr();
    assert_eq!(
        reload_applied(&agent).as_deref(),
        Some("replace"),
        "{}",
        log()
    );
    assert_eq!(counts(victim), FULL, "after the reload");

    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert_eq!(saved_bans(&state_dir), BANS, "saved on stop");
    eprintln!(
        "issue15: {} bans: ban --file {ban_took:.2?} (saved within {saved_after:.2?}), restart {restart_took:.2?}, restore after flush {restore_took:.2?}, reload {reload_took:.2?}; ipsets mirror all",
        BANS
    );
}
