//! Issue 7, self-healing and stopping: in the older-kernel mode (`nft.compat = "legacy"`, the
//! table not owned) another process's `nft flush ruleset` and `nft delete table inet ftagent`
//! are undone within a second, every ban back with the time it had left, a `table_restored`
//! event each time; an owned table is left alone by both; an agent killed mid-incident leaves
//! its bans to run out, and its restart takes the incident over (no duplicate, no lost ban,
//! the undo at its end); a stop keeps the bans, or with `on_stop = "remove"` removes them.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{table_part, Agent, Setup};
use crate::lab::{self, Lab, UdpFlood, ATTACKER4, OTHER4, OTHER6, VICTIM4};

const SECTIONS: &str = "[[service]]\nport = 27015\nproto = \"udp\"\n\n\
    [sense]\nconntrack_interval = \"1s\"\n\n[detection]\nhold = \"2s\"\n\n";
const FLOOD_PPS: u64 = 20_000;

/// The agent in `compat` mode with more `[mitigation]` keys, after a 3 s warm-up.
fn warmed_up<'a>(lab: &'a Lab, compat: &'a str, mitigation: &str) -> Agent<'a> {
    let sections = format!("{SECTIONS}[mitigation]\n{mitigation}\n");
    let mut agent = Agent::configured(
        lab,
        Setup {
            compat,
            agent: "warmup = \"3s\"",
            sections: &sections,
            ..Setup::default()
        },
    );
    agent.start();
    lab.ping(OTHER4, VICTIM4, 100);
    std::thread::sleep(Duration::from_secs(2));
    agent
}

/// A concentrated UDP flood from ATTACKER4 lasting `seconds`.
fn flood(lab: &Lab, seconds: u64) -> lab::Flood {
    let flood = UdpFlood {
        src: ATTACKER4,
        dst: VICTIM4,
        sport: 40000,
        dport: Some(27015),
        payload: 64,
    };
    lab.udp_flood(&flood, FLOOD_PPS * seconds, FLOOD_PPS)
}

fn events_named(agent: &Agent, name: &str) -> Vec<Value> {
    agent
        .all_events()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

fn wait_for(agent: &Agent, name: &str, timeout: Duration) -> Value {
    lab::wait_until(timeout, name, || !events_named(agent, name).is_empty());
    events_named(agent, name).remove(0)
}

/// Waits until the incident has banned its source (a flood's first ticks may look
/// distributed and get the port limit first).
fn wait_for_ban(agent: &Agent) {
    lab::wait_until(Duration::from_secs(10), "the flood's source banned", || {
        events_named(agent, "mitigation_applied")
            .iter()
            .any(|e| e["action"] == "ban" && e["addresses"][0] == ATTACKER4)
    });
}

/// `ftagent rules dump` (its nft table part), or None when there is no table.
fn dump(agent: &Agent) -> Option<String> {
    let out = agent.run(&["rules", "dump"]);
    let text = table_part(&String::from_utf8_lossy(&out.stdout)).to_string();
    (out.status.success() && text.contains("table inet ftagent")).then_some(text)
}

/// The element line of `addr` in a dump: (timeout, expires).
fn ban_of(dump: &str, addr: &str) -> Option<(Duration, Duration)> {
    let at = dump.find(&format!("{addr} timeout "))?;
    let mut words = dump[at..].split([' ', ',', '\n', '}']);
    let _ = words.next();
    let _ = words.next();
    let timeout = nft_duration(words.next()?)?;
    (words.next()? == "expires").then_some(())?;
    Some((timeout, nft_duration(words.next()?)?))
}

/// `1d2h3m4s500ms` as nft prints it.
fn nft_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut number = 0u64;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(d) = c.to_digit(10) {
            number = number * 10 + u64::from(d);
            continue;
        }
        let ms = match c {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            's' => 1000,
            _ => return None,
        };
        total += number * ms;
        number = 0;
    }
    Some(Duration::from_millis(total))
}

/// Runs `command` in the victim namespace 5 times during an incident with bans; each time the
/// table is back within 1 s with both bans, the operator's with no more time than it had
/// left, and one more `table_restored` event names the deletion.
fn undone_five_times(lab: &Lab, agent: &Agent, command: &str) {
    for round in 0..5 {
        let before = dump(agent).expect("our table");
        let (op_timeout, op_left) = ban_of(&before, OTHER4).expect("the operator's ban");
        assert!(ban_of(&before, ATTACKER4).is_some(), "the incident's ban");
        let restores = events_named(agent, "table_restored").len();
        let started = Instant::now();
        lab.victim.run_ok(&["nft", command]);
        let mut restored = None;
        while started.elapsed() < Duration::from_secs(3) && restored.is_none() {
            restored = dump(agent)
                .filter(|d| ban_of(d, OTHER4).is_some() && ban_of(d, ATTACKER4).is_some());
        }
        let took = started.elapsed();
        let after = restored.unwrap_or_else(|| panic!("`nft {command}` #{round}: not restored"));
        assert!(
            took < Duration::from_secs(1),
            "{command}: restored after {took:?}"
        );
        let (timeout, left) = ban_of(&after, OTHER4).unwrap();
        assert_eq!(timeout, op_timeout, "the same timeout: {after}");
        assert!(
            left <= op_left && left < op_timeout,
            "with the time it had left ({op_left:?}), not a fresh one: {left:?}"
        );
        let (_, incident_left) = ban_of(&after, ATTACKER4).unwrap();
        assert!(incident_left <= Duration::from_secs(600));
        lab::wait_until(Duration::from_secs(2), "a table_restored event", || {
            events_named(agent, "table_restored").len() > restores
        });
        let events = events_named(agent, "table_restored");
        assert_eq!(
            events.len(),
            restores + 1,
            "one event per restore: {events:?}"
        );
        let event = events.last().unwrap();
        assert_eq!(event["cause"], "table_deleted", "{event}");
        assert_eq!(event["by_process"], "nft", "{event}");
        assert!(event["put_back"].as_u64().unwrap() >= 2, "{event}");
        eprintln!(
            "issue7: `nft {command}` #{}: back in the dump {} ms after the command; the agent took {} ms from notice to restored table",
            round + 1,
            took.as_millis(),
            event["took_ms"]
        );
        // The agent puts back at most 5 tables a second (a tool fighting it gets no busy
        // loop); a deletion every 250 ms or more is undone at once.
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn issue7_unowned_table_flushed_or_deleted_is_back_within_a_second_with_its_bans() {
    let Some((_guard, lab)) = lab::start("heal-legacy") else {
        return;
    };
    let agent = warmed_up(&lab, "legacy", "");
    agent.run_ok(&["ban", OTHER4, "--for", "5m"]);
    let generator = flood(&lab, 25);
    let start = wait_for(&agent, "attack_start", Duration::from_secs(10));
    wait_for_ban(&agent);
    undone_five_times(&lab, &agent, "flush ruleset");
    undone_five_times(&lab, &agent, "delete table inet ftagent");
    let ongoing: Vec<Value> = events_named(&agent, "attack_start");
    assert_eq!(ongoing.len(), 1, "still the one incident: {ongoing:?}");
    assert!(
        events_named(&agent, "attack_end").is_empty(),
        "the incident lasted through the restores"
    );
    generator.finish(Duration::from_secs(60));
    lab.assert_users_served(0.95);
    let removed = wait_for(&agent, "mitigation_removed", Duration::from_secs(20));
    assert_eq!(removed["incident"], start["incident"]);
    let restored = events_named(&agent, "table_restored");
    assert_eq!(restored.len(), 10, "{restored:?}");
}

#[test]
fn issue7_owned_table_is_left_alone_by_flush_ruleset_and_delete_table() {
    let Some((_guard, lab)) = lab::start("heal-owned") else {
        return;
    };
    let mut agent = Agent::new(&lab, "auto");
    agent.start();
    agent.run_ok(&["ban", OTHER4, "--for", "5m"]);
    agent.run_ok(&["ban", OTHER6, "--for", "5m"]);
    lab.victim.run_ok(&["nft", "flush ruleset"]);
    let refused = lab.victim.run(&["nft", "delete table inet ftagent"]);
    assert!(
        !refused.status.success(),
        "an owned table refuses: {refused:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let after = dump(&agent).expect("the table stays");
    for addr in [OTHER4, OTHER6] {
        let (timeout, _) = ban_of(&after, addr).unwrap_or_else(|| panic!("{addr}: {after}"));
        assert_eq!(timeout, Duration::from_secs(300));
    }
    assert!(events_named(&agent, "table_restored").is_empty());
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

/// SIGKILL mid-incident: the bans stay (the operator's short one runs out by itself); a
/// restart finds each ban once, takes the incident over without announcing it again, and
/// lifts its ban when it ends.
fn killed_mid_incident_then_restarted(test: &str, compat: &str) {
    let Some((_guard, lab)) = lab::start(test) else {
        return;
    };
    let mut agent = warmed_up(&lab, compat, "");
    let generator = flood(&lab, 22);
    let start = wait_for(&agent, "attack_start", Duration::from_secs(10));
    wait_for_ban(&agent);
    agent.run_ok(&["ban", OTHER4, "--for", "3s"]);
    let mut killed = agent.daemon.take().unwrap();
    killed.signal(libc::SIGKILL);
    killed.wait_timeout(Duration::from_secs(5)).expect("killed");

    lab::wait_until(
        Duration::from_secs(6),
        "the operator's ban to run out",
        || dump(&agent).is_some_and(|d| !d.contains(&format!("{OTHER4} "))),
    );
    let kept = dump(&agent).expect("the table outlives the agent");
    assert!(
        ban_of(&kept, ATTACKER4).is_some(),
        "the incident's ban stays: {kept}"
    );

    agent.start();
    let resumed = dump(&agent).expect("our table");
    assert_eq!(
        resumed.matches(&format!("{ATTACKER4} ")).count(),
        1,
        "once: {resumed}"
    );
    assert!(agent
        .daemon
        .as_ref()
        .unwrap()
        .stderr()
        .contains("resumed from"));
    generator.finish(Duration::from_secs(60));
    lab.assert_users_served(0.95);
    let end = wait_for(&agent, "attack_end", Duration::from_secs(20));
    assert_eq!(end["incident"], start["incident"], "the same incident ends");
    assert!(
        events_named(&agent, "attack_start").is_empty(),
        "not announced again"
    );
    lab::wait_until(Duration::from_secs(5), "the ban lifted", || {
        events_named(&agent, "mitigation_removed")
            .iter()
            .any(|e| e["action"] == "ban")
    });
    let removed = events_named(&agent, "mitigation_removed");
    let ban = removed.iter().find(|e| e["action"] == "ban").unwrap();
    assert_eq!(ban["incident"], start["incident"], "{ban}");
    assert_eq!(ban["addresses"][0], ATTACKER4, "{ban}");
    assert!(
        ban_of(&dump(&agent).unwrap(), ATTACKER4).is_none(),
        "lifted"
    );
    agent.stop();
}

#[test]
fn issue7_killed_mid_incident_restart_takes_over_owned_table() {
    killed_mid_incident_then_restarted("heal-kill-owned", "auto");
}

#[test]
fn issue7_killed_mid_incident_restart_takes_over_legacy_mode() {
    killed_mid_incident_then_restarted("heal-kill-legacy", "legacy");
}

/// SIGTERM keeps the table and its bans by default; `on_stop = "remove"` removes it.
fn stop_keeps_or_removes(test: &str, compat: &str) {
    let Some((_guard, lab)) = lab::start(test) else {
        return;
    };
    for (on_stop, stays) in [("keep", true), ("remove", false)] {
        let sections = format!("[mitigation]\non_stop = \"{on_stop}\"\n");
        let mut agent = Agent::configured(
            &lab,
            Setup {
                compat,
                sections: &sections,
                ..Setup::default()
            },
        );
        agent.start();
        agent.run_ok(&["ban", OTHER4, "--for", "5m"]);
        let (status, log) = agent.stop();
        assert!(status.success(), "{log}");
        let tables = lab.victim.run_ok(&["nft", "list", "tables"]);
        assert_eq!(
            tables.contains("inet ftagent"),
            stays,
            "{on_stop}: {tables}"
        );
        if stays {
            let kept = dump(&agent).unwrap();
            assert!(ban_of(&kept, OTHER4).is_some(), "{kept}");
        }
    }
}

#[test]
fn issue7_stop_keeps_bans_or_removes_them_owned_table() {
    stop_keeps_or_removes("heal-stop-owned", "auto");
}

#[test]
fn issue7_stop_keeps_bans_or_removes_them_legacy_mode() {
    stop_keeps_or_removes("heal-stop-legacy", "legacy");
}
