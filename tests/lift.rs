//! Issue 15: an operator stands a measure down. A distributed flood on the users' DNS port
//! gets the port held to a rate that starves the real clients too; `ftagent lift INCIDENT
//! limit_port` takes the limit out at once (the clients get through right after the command
//! returns) and the incident's updates do not put it back.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::agent::{Agent, Setup};
use crate::lab::{self, Lab};

const SECTIONS: &str = "[[service]]\nport = 53\nproto = \"udp\"\n\n[detection]\nhold = \"2s\"\n\n\
    [mitigation]\nport_limit_pps = 100\n";

fn events_named(agent: &Agent, name: &str) -> Vec<Value> {
    agent
        .all_events()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

fn dns_share(lab: &Lab, from: SystemTime, to: SystemTime) -> (u64, u64) {
    let served = lab.users_served_between(from, to);
    ["dns4", "dns6"]
        .iter()
        .map(|k| served[*k])
        .fold((0, 0), |(a, b), (ok, n)| (a + ok, b + n))
}

fn limit_udp_elements(agent: &Agent) -> bool {
    let dump = agent.dump();
    let set = dump
        .split("\tset ")
        .find(|s| s.starts_with("limit_udp "))
        .unwrap()
        .to_string();
    set.contains("elements")
}

#[test]
fn issue15_lifting_a_port_limit_lets_the_clients_through_at_once() {
    // With the users' DNS service on :53 and their clients asking it, both families.
    let Some((_guard, lab)) = lab::start("lift") else {
        return;
    };
    let setup = Setup {
        agent: "warmup = \"3s\"",
        sections: SECTIONS,
        ..Setup::default()
    };
    let mut agent = Agent::configured(&lab, setup);
    agent.start();
    std::thread::sleep(Duration::from_secs(3));
    // Spoofed sources all over 10.250/16: the port is held to 100 pps, the clients with it.
    let flood = lab.distributed_udp(53, 240_000, 20_000);
    lab::wait_until(Duration::from_secs(10), "the port limit", || {
        events_named(&agent, "mitigation_applied")
            .iter()
            .any(|e| e["action"] == "limit_port")
    });
    let applied = events_named(&agent, "mitigation_applied")
        .into_iter()
        .find(|e| e["action"] == "limit_port")
        .unwrap();
    assert_eq!(applied["port"], 53, "{applied}");
    let limited_from = SystemTime::now() + Duration::from_secs(1);
    std::thread::sleep(Duration::from_secs(3));
    let limited_to = SystemTime::now() - Duration::from_secs(1);

    let incident = applied["incident"].as_str().unwrap();
    let reply = agent.run_ok(&["lift", incident, "limit_port"]);
    let lifted_at = SystemTime::now();
    // The limit is out of the kernel when the command returns: a client gets through now.
    let answered = lab.users_dns_query("lifted.example");
    let took = lifted_at.elapsed().unwrap_or_default();
    assert!(!limit_udp_elements(&agent), "the port is out of limit_udp");
    eprintln!(
        "issue15: lift: {} ; a user's DNS query answered {answered} ({took:?} after the lift)",
        reply.trim()
    );
    assert!(answered, "a user's query right after the lift");
    let lifted = events_named(&agent, "mitigation_lifted");
    assert_eq!(lifted.len(), 1, "{lifted:#?}");
    assert_eq!(
        (&lifted[0]["action"], &lifted[0]["port"], &lifted[0]["by"]),
        (
            &Value::from("limit_port"),
            &Value::from(53),
            &Value::from("operator")
        ),
        "{}",
        lifted[0]
    );

    // The incident goes on (its updates every tick) without the limit.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !limit_udp_elements(&agent),
        "kept out for the rest of the incident"
    );
    let after = SystemTime::now() - Duration::from_secs(1);
    let reapplied = events_named(&agent, "mitigation_applied")
        .iter()
        .filter(|e| e["action"] == "limit_port")
        .count();
    assert_eq!(reapplied, 1, "not put back");
    let sent = flood.finish(Duration::from_secs(40));
    let before = dns_share(&lab, limited_from, limited_to);
    let since = dns_share(&lab, lifted_at + Duration::from_secs(1), after);
    eprintln!(
        "issue15: lift: the users' DNS answered {} of {} while the port was limited, {} of {} \
         after the lift ({} flood packets sent)",
        before.0, before.1, since.0, since.1, sent.packets
    );
    assert!(
        before.0 * 2 < before.1,
        "the limit hurt the clients: {before:?}"
    );
    assert!(since.1 > 0 && since.0 * 10 >= since.1 * 9, "{since:?}");
    let ended = wait_end(&agent, incident);
    assert_eq!(ended["incident"], incident);
    let removed = events_named(&agent, "mitigation_removed");
    assert!(
        !removed.iter().any(|e| e["action"] == "limit_port"),
        "nothing left to remove: {removed:#?}"
    );
}

fn wait_end(agent: &Agent, incident: &str) -> Value {
    let end = || {
        events_named(agent, "attack_end")
            .into_iter()
            .find(|e| e["incident"] == incident)
    };
    lab::wait_until(Duration::from_secs(20), "attack_end", || end().is_some());
    end().unwrap()
}
