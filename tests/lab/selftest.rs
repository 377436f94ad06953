//! Self-tests of the namespace lab (included from tests/lab/mod.rs as `mod selftest;`):
//! exact arrival counting per source, process guards, cleanup also on panic, the paced
//! generator's shape as the victim records it, and the users being served.

use super::*;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

fn assert_ns_gone(names: &[String]) {
    let list = netns_list();
    for n in names {
        assert!(
            !list.contains(n),
            "namespace {n} still exists after drop: {list:?}"
        );
    }
}

fn assert_no_root_veth() {
    let out = host(&["ip", "-o", "link", "show"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [VICTIM_IF, ATTACKER_IF, VICTIM_USERS_IF, USERS_IF] {
        assert!(
            !text.contains(&format!(": {name}@")) && !text.contains(&format!(": {name}:")),
            "lab interface {name} present in the root namespace:\n{text}"
        );
    }
}

fn all_arrivals(lab: &Lab) -> [u64; 4] {
    [
        lab.arrivals(ATTACKER4),
        lab.arrivals(OTHER4),
        lab.arrivals(ATTACKER6),
        lab.arrivals(OTHER6),
    ]
}

#[test]
fn lab_counts_arrivals_exactly_per_source() {
    if !require_root("lab_counts_arrivals_exactly_per_source") {
        return;
    }
    let _serial = serial();
    let names;
    {
        let lab = Lab::new("selftest-count");
        names = vec![
            lab.victim.name().to_string(),
            lab.attacker.name().to_string(),
        ];
        assert!(lab.dir().is_dir());
        lab.count_arrivals();
        assert_eq!(all_arrivals(&lab), [0, 0, 0, 0]);

        lab.ping(ATTACKER4, VICTIM4, 7);
        assert_eq!(all_arrivals(&lab), [7, 0, 0, 0]);

        lab.ping(OTHER4, VICTIM4, 5);
        assert_eq!(all_arrivals(&lab), [7, 5, 0, 0]);

        lab.ping(ATTACKER6, VICTIM6, 9);
        assert_eq!(all_arrivals(&lab), [7, 5, 9, 0]);

        lab.ping(OTHER6, VICTIM6, 3);
        assert_eq!(all_arrivals(&lab), [7, 5, 9, 3]);

        // Replies came back too: the path works both ways.
        let out = lab.attacker.run_ok(&[
            "ping", "-n", "-c", "2", "-i", "0.01", "-W", "1", "-I", ATTACKER4, VICTIM4,
        ]);
        assert!(out.contains("2 received"), "{out}");
        assert_eq!(all_arrivals(&lab), [9, 5, 9, 3]);

        // Non-canonical spelling of a counted address is accepted.
        assert_eq!(lab.arrivals("fd00:250:0:0::1"), 9);
    }
    assert_ns_gone(&names);
    assert_no_root_veth();
}

#[test]
fn lab_counts_nothing_when_dropped_in_prerouting() {
    if !require_root("lab_counts_nothing_when_dropped_in_prerouting") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("selftest-drop");
    lab.count_arrivals();
    // A prerouting drop (as the agent would install) hides packets from the input counter.
    let rules = lab.dir().join("drop.nft");
    std::fs::write(
        &rules,
        format!(
            "table inet dropper {{\n chain pre {{\n  type filter hook prerouting priority -300; policy accept;\n  ip saddr {ATTACKER4} drop\n }}\n}}\n"
        ),
    )
    .unwrap();
    lab.victim.run_ok(&["nft", "-f", rules.to_str().unwrap()]);
    lab.ping(ATTACKER4, VICTIM4, 5);
    lab.ping(OTHER4, VICTIM4, 4);
    assert_eq!(all_arrivals(&lab), [0, 4, 0, 0]);
}

#[test]
fn lab_cleans_up_when_test_panics() {
    if !require_root("lab_cleans_up_when_test_panics") {
        return;
    }
    let _serial = serial();
    let names: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let dir: Mutex<Option<PathBuf>> = Mutex::new(None);
    let pid: Mutex<Option<u32>> = Mutex::new(None);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new("selftest-panic");
        *names.lock().unwrap() = vec![
            lab.victim.name().to_string(),
            lab.attacker.name().to_string(),
        ];
        *dir.lock().unwrap() = Some(lab.dir().to_path_buf());
        // A long-running process that would keep the namespace alive if not killed;
        // deliberately leaked so only the Lab drop can stop it.
        let p = lab.victim.spawn(&["sleep", "60"]);
        *pid.lock().unwrap() = Some(p.pid());
        std::mem::forget(p);
        assert!(netns_list().contains(&lab.victim.name().to_string()));
        panic!("deliberate panic inside the lab self-test");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    assert_ns_gone(&names.lock().unwrap());
    assert_no_root_veth();
    let dir = dir.lock().unwrap().clone().unwrap();
    assert!(!dir.exists(), "{} still exists", dir.display());
    // The leaked `sleep` was killed by the Lab drop (at most a zombie, never running).
    let pid = pid.lock().unwrap().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "sleep {pid} still alive: {stat}"
    );
    // Reap the zombie so it does not linger for the rest of the test run.
    // SAFETY: waitpid on our own child pid.
    unsafe {
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
    }
}

#[test]
fn lab_proc_guard_captures_output_and_stops() {
    if !require_root("lab_proc_guard_captures_output_and_stops") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("selftest-proc");

    // A short process: output captured to files, exit status reported.
    let p = lab
        .attacker
        .spawn(&["sh", "-c", "echo hello; echo oops >&2; exit 3"]);
    let out = p.finish(Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    // It runs inside the namespace: it sees the lab interface.
    let links = lab.victim.run_ok(&["ip", "-o", "link", "show"]);
    assert!(links.contains(VICTIM_IF), "{links}");

    // A long-running process: still running, then stopped by a signal.
    let mut p = lab.victim.spawn(&["sleep", "60"]);
    assert!(p.wait_timeout(Duration::from_millis(200)).is_none());
    assert!(ns_pids(lab.victim.name()).contains(&(p.pid() as libc::pid_t)));
    p.signal(libc::SIGTERM);
    let st = p
        .wait_timeout(Duration::from_secs(5))
        .expect("sleep should exit on SIGTERM");
    assert!(!st.success());

    // Dropping the guard stops a running process.
    let p = lab.victim.spawn(&["sleep", "60"]);
    let pid = p.pid();
    drop(p);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sleep {pid} survived its guard"
    );

    // run() output and failure status.
    let out = lab.victim.run(&["sh", "-c", "echo x; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n");
    let r = catch_unwind(AssertUnwindSafe(|| lab.victim.run_ok(&["false"])));
    assert!(r.is_err());

    // wait_until polls and panics with the description on timeout.
    let mut n = 0;
    wait_until(Duration::from_secs(2), "n reaches 3", || {
        n += 1;
        n >= 3
    });
    let r = catch_unwind(|| wait_until(Duration::from_millis(120), "never", || false));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("never"), "{msg}");
}

#[test]
fn lab_rejects_addresses_outside_the_lab() {
    assert!(catch_unwind(|| assert_lab_addr("10.251.0.1")).is_err());
    assert!(catch_unwind(|| assert_lab_addr("8.8.8.8")).is_err());
    assert!(catch_unwind(|| assert_lab_addr("fd00:251::1")).is_err());
    assert!(catch_unwind(|| assert_lab_addr("fd00:250:0:1::1")).is_err());
    assert!(catch_unwind(|| assert_lab_addr("nonsense")).is_err());
    assert_lab_addr(VICTIM4);
    assert_lab_addr(OTHER6);
}

// ---------------------------------------------------------------------------
// Traffic helpers: spoofed floods, DNS, HTTP, syncookies.

/// Loads an nft script into the victim namespace.
fn victim_nft(lab: &Lab, script: &str) {
    let path = lab.dir().join(format!("selftest-{}.nft", next_id()));
    std::fs::write(&path, script).unwrap();
    lab.victim.run_ok(&["nft", "-f", path.to_str().unwrap()]);
}

/// Packets of the counter rule with comment `comment` in table `inet {table}` of the victim.
fn victim_counter(lab: &Lab, table: &str, comment: &str) -> u64 {
    let json = lab
        .victim
        .run_ok(&["nft", "-j", "list", "table", "inet", table]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["rule"]["comment"].as_str() == Some(comment))
        .find_map(|i| {
            i["rule"]["expr"]
                .as_array()?
                .iter()
                .find_map(|e| e["counter"]["packets"].as_u64())
        })
        .unwrap_or_else(|| panic!("no counter {comment} in:\n{json}"))
}

/// Elements of set `inet {table} {set}` in the victim, as strings.
fn victim_set_elems(lab: &Lab, table: &str, set: &str) -> Vec<String> {
    let json = lab
        .victim
        .run_ok(&["nft", "-j", "list", "set", "inet", table, set]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let set = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i.get("set"))
        .unwrap_or_else(|| panic!("no set in:\n{json}"));
    let Some(elems) = set["elem"].as_array() else {
        return Vec::new();
    };
    elems
        .iter()
        .map(|e| {
            let e = if e["elem"].is_object() {
                &e["elem"]["val"]
            } else {
                e
            };
            match e {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        })
        .collect()
}

/// Installs `table inet seen` in the victim: a prerouting chain (before any rp_filter
/// check) recording every IPv4 source sending to `proto dport` in set `src` and every
/// destination port in set `dports`, with counters for all such packets (`all`), sources
/// outside 10.250.0.0/16 (`outside`) and sources in the excluded 10.250.0.0/23 (`excluded`).
fn install_seen(lab: &Lab, proto: &str, dport: Option<u16>) {
    let port = dport.map_or(String::new(), |p| format!(" {proto} dport {p}"));
    victim_nft(
        lab,
        &format!(
            "table inet seen {{
  set src {{ type ipv4_addr; size 65536; flags dynamic; }}
  set dports {{ type inet_service; size 65536; flags dynamic; }}
  chain pre {{
    type filter hook prerouting priority -400; policy accept;
    meta nfproto ipv4 meta l4proto {proto}{port} goto seen
  }}
  chain seen {{
    counter comment \"all\"
    add @src {{ ip saddr }}
    add @dports {{ {proto} dport }}
    ip saddr != 10.250.0.0/16 counter comment \"outside\"
    ip saddr 10.250.0.0/23 counter comment \"excluded\"
  }}
}}
"
        ),
    );
}

#[test]
fn lab_distributed_udp_comes_from_thousands_of_lab_sources() {
    if !require_root("lab_distributed_udp_comes_from_thousands_of_lab_sources") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("selftest-distributed");
    install_seen(&lab, "udp", Some(5300));

    // As fast as trafgen goes.
    let rx0 = lab.victim_rx_packets();
    let start = Instant::now();
    let out = lab
        .spawn_distributed_udp(5300, 5000)
        .finish(Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.wait_arrival(rx0, 5000);
    eprintln!(
        "distributed udp: 5000 packets, unbounded rate, in {:?}",
        start.elapsed()
    );
    assert_eq!(victim_counter(&lab, "seen", "all"), 5000);
    assert_eq!(victim_counter(&lab, "seen", "outside"), 0);
    assert_eq!(victim_counter(&lab, "seen", "excluded"), 0);
    let srcs = victim_set_elems(&lab, "seen", "src");
    eprintln!("distributed udp: {} distinct sources", srcs.len());
    assert!(srcs.len() >= 1000, "only {} distinct sources", srcs.len());
    for s in &srcs {
        let ip: std::net::Ipv4Addr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        let o = ip.octets();
        assert!(
            o[0] == 10 && o[1] == 250 && (2..=254).contains(&o[2]),
            "source {ip}"
        );
    }
    assert_eq!(victim_set_elems(&lab, "seen", "dports"), ["5300"]);

    // Paced: 3000 packets at 3000 pps (both scaled by the knob) take about a second.
    let sent = lab
        .distributed_udp(5300, 3000, 3000)
        .finish(Duration::from_secs(60));
    eprintln!("distributed udp: {sent:?} paced at 3000 pps");
    assert_eq!(sent.packets, pacer::scale(3000));
    assert!(sent.elapsed >= Duration::from_millis(800), "{sent:?}");
    let want = 5000 + sent.packets;
    wait_until(Duration::from_secs(5), "every packet counted", || {
        victim_counter(&lab, "seen", "all") == want
    });
    assert_eq!(victim_counter(&lab, "seen", "outside"), 0);
    assert_eq!(victim_counter(&lab, "seen", "excluded"), 0);
}

/// The 100 ms bins of the record that fall inside the flood's span, but for its first and
/// last (partly outside it).
fn inner_bins(lab: &Lab) -> Vec<u64> {
    let bins = lab.recorder.lock().unwrap().bins();
    let shape = record::shape(&bins).expect("a flood in the record");
    bins.iter()
        .filter(|b| b.end - 0.1 > shape.from + 0.05 && b.end < shape.to - 0.05)
        .map(|b| b.packets)
        .collect()
}

/// Issue 13: a paced flood arrives at the victim as a steady rate (the bins of the record
/// near rate / 10), a pulse wave as pulses, and trafgen's `-b` as it sends it.
#[test]
fn issue13_paced_floods_arrive_steady_and_pulses_as_pulses() {
    let Some((_serial, lab)) = start_quiet("issue13_paced_floods") else {
        return;
    };
    let flood = UdpFlood {
        src: ATTACKER4,
        dst: VICTIM4,
        sport: 40000,
        dport: Some(5300),
        payload: 64,
    };
    let rate = pacer::scale(30_000);
    let sent = lab
        .udp_flood(&flood, 60_000, 30_000)
        .finish(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let bins = inner_bins(&lab);
    eprintln!("paced {rate} pps: {sent:?}, per 100 ms: {bins:?}");
    assert!(bins.len() >= 15, "about 2 s of bins: {bins:?}");
    let per_bin = rate / 10;
    let near = bins
        .iter()
        .filter(|&&b| b * 10 >= per_bin * 7 && b * 10 <= per_bin * 13)
        .count();
    assert!(
        near * 10 >= bins.len() * 8,
        "at least 80 % of the bins within 30 % of {per_bin}: {bins:?}"
    );
    let recorded: u64 = lab.received_per_100ms().iter().sum();
    assert!(
        (sent.packets..sent.packets + 20).contains(&recorded),
        "every packet in the record: {recorded} of {sent:?}"
    );
    assert_eq!(sent.packets, pacer::scale(60_000));

    // Pulses: 0.5 s on, 0.5 s off, three of them.
    let lab = {
        drop(lab);
        Lab::new("issue13_pulses")
    };
    let on = Duration::from_millis(500);
    lab.udp_pulses(&flood, 45_000, 30_000, on, on)
        .finish(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let bins = inner_bins(&lab);
    eprintln!("pulses of {rate} pps, 0.5 s on, 0.5 s off: {bins:?}");
    let quiet = bins.iter().filter(|&&b| b < record::FLOOD_BIN).count();
    let loud = bins.iter().filter(|&&b| b * 10 >= per_bin * 7).count();
    assert!(
        (6..=14).contains(&quiet) && (9..=18).contains(&loud),
        "two silences and three pulses of about 5 bins: {bins:?}"
    );
    assert!(lab.flood_shape().unwrap().duty < 0.8);

    // trafgen's -b: each second's packets in one burst, as fast as this machine sends them.
    let lab = {
        drop(lab);
        Lab::new("issue13_bursts")
    };
    let out = lab
        .udp_flood_bursty(&flood, 60_000, 30_000)
        .finish(Duration::from_secs(30));
    assert!(out.status.success(), "trafgen: {out:?}");
    std::thread::sleep(Duration::from_millis(300));
    let shape = lab.flood_shape().expect("the bursts in the record");
    eprintln!(
        "trafgen -b {rate}pps: {shape:?}, per 100 ms: {:?}",
        lab.received_per_100ms()
    );
    assert!(shape.duty < 0.7, "bursts, not a steady rate: {shape:?}");
    assert!(
        shape.peak > per_bin * 3 / 2,
        "a burst is faster than the rate: {shape:?}"
    );
}

/// Issue 13: the users are served in a quiet lab (every request of every kind), from their
/// own addresses: nothing of theirs reaches the victim over the attacker's veth.
#[test]
fn issue13_users_are_served_from_their_own_addresses() {
    let Some((_serial, lab)) = start("issue13_users") else {
        return;
    };
    let rx0 = lab.victim_rx_packets();
    std::thread::sleep(Duration::from_secs(4));
    let now = std::time::SystemTime::now();
    let guard = lab.users.lock().unwrap();
    let users = guard.as_ref().unwrap();
    users.wait_reported(now);
    let seconds = users.seconds();
    eprintln!("users: {seconds:?}");
    let full: Vec<_> = seconds.iter().skip(1).collect();
    assert!(full.len() >= 3, "{seconds:?}");
    for (t, second) in full {
        for (kind, (ok, n)) in second {
            assert_eq!(ok, n, "second {t}: {kind} {ok} of {n} served");
            let want = if kind.starts_with("http") { 10 } else { 40 };
            assert!(
                (want - 2..=want + 2).contains(n),
                "second {t}: {kind}: {n} requests started"
            );
        }
    }
    assert!(
        lab.victim_rx_packets() - rx0 < 50,
        "the users do not come over the attacker's veth"
    );
    assert!(lab.flood_shape().is_none(), "no flood in a quiet lab");
}

#[test]
fn lab_spoofed_syn_flood_reaches_the_victim() {
    if !require_root("lab_spoofed_syn_flood_reaches_the_victim") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("selftest-synflood");
    let host_cookies = host_ok(&["sysctl", "-n", "net.ipv4.tcp_syncookies"]);
    assert_eq!(lab.syncookies(), "1");
    lab.set_syncookies("0");
    assert_eq!(lab.syncookies(), "0");
    assert_eq!(
        host_ok(&["sysctl", "-n", "net.ipv4.tcp_syncookies"]),
        host_cookies,
        "the host's tcp_syncookies changed"
    );
    install_seen(&lab, "tcp", Some(8080));
    let mut listener = lab.victim.spawn(&[
        "python3",
        "-c",
        "import socket, time\nl = socket.socket()\nl.bind(('10.250.0.2', 8080))\nl.listen(4)\nprint('listening', flush=True)\ntime.sleep(60)\n",
    ]);
    wait_until(Duration::from_secs(10), "listener", || {
        listener.stdout().contains("listening")
    });

    let rx0 = lab.victim_rx_packets();
    let sent = lab
        .syn_flood_spoofed(8080, 20_000, 20_000)
        .finish(Duration::from_secs(60));
    lab.wait_arrival(rx0, sent.packets);
    eprintln!("spoofed syn flood: {sent:?} paced at 20000 pps");
    assert_eq!(sent.packets, pacer::scale(20_000));
    assert_eq!(victim_counter(&lab, "seen", "all"), sent.packets);
    assert_eq!(victim_counter(&lab, "seen", "outside"), 0);
    assert_eq!(victim_counter(&lab, "seen", "excluded"), 0);
    let srcs = victim_set_elems(&lab, "seen", "src").len();
    eprintln!("spoofed syn flood: {srcs} distinct sources");
    assert!(srcs >= 1000, "{srcs}");
    let ss = lab.victim.run_ok(&["ss", "-Htn", "state", "syn-recv"]);
    let nstat = lab.victim.run_ok(&[
        "nstat",
        "-az",
        "TcpExtListenDrops",
        "TcpExtListenOverflows",
        "TcpExtTCPReqQFullDrop",
        "TcpExtSyncookiesSent",
    ]);
    eprintln!(
        "spoofed syn flood: {} SYN-RECV sockets\n{nstat}",
        ss.lines().count()
    );
    assert!(listener.running());
}

#[test]
fn lab_amplification_hits_random_ports() {
    if !require_root("lab_amplification_hits_random_ports") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("selftest-amplification");
    install_seen(&lab, "udp", None);
    let rx0 = lab.victim_rx_packets();
    let out = lab
        .spawn_amplification(53, 1200, 2000)
        .finish(Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.wait_arrival(rx0, 2000);
    assert_eq!(victim_counter(&lab, "seen", "all"), 2000);
    assert_eq!(victim_set_elems(&lab, "seen", "src"), [ATTACKER4]);
    let ports = victim_set_elems(&lab, "seen", "dports").len();
    assert!(ports >= 1000, "{ports} destination ports");
}

#[test]
fn lab_dns_server_answers_queries() {
    if !require_root("lab_dns_server_answers_queries") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("selftest-dns");
    // No server yet: the query fails (port unreachable), and quickly.
    let start = Instant::now();
    assert!(!lab.dns_query("example.test"));
    assert!(start.elapsed() < Duration::from_secs(5));
    let server = lab.dns_server();
    assert!(lab.dns_query("example.test"));
    assert!(lab.dns_query("a-b.c_d.example.test."));
    for i in 0..5 {
        assert!(lab.dns_query(&format!("host{i}.example.test")));
    }
    assert!(std::panic::catch_unwind(AssertUnwindSafe(|| lab.dns_query("bad name"))).is_err());
    drop(server);
    assert!(!lab.dns_query("example.test"));
}

#[test]
fn lab_http_server_serves_ok() {
    if !require_root("lab_http_server_serves_ok") || !require_nginx("lab_http_server_serves_ok") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("selftest-http");
    let _server = lab.http_server(8081);
    let t = Duration::from_secs(2);
    assert!(lab.http_get(OTHER4, 8081, t));
    assert!(lab.http_get(ATTACKER4, 8081, t));
    assert!(lab.http_get(FAR4, 8081, t));
    // Nothing listening: refused at once.
    assert!(!lab.http_get(OTHER4, 8082, t));
    // A source the namespace does not own is a caller error.
    assert!(catch_unwind(AssertUnwindSafe(|| lab.http_get(VICTIM4, 8081, t))).is_err());
    // Silently dropped: false after the timeout, not later.
    victim_nft(
        &lab,
        &format!(
            "table inet block {{\n chain pre {{\n  type filter hook prerouting priority -300; policy accept;\n  ip saddr {OTHER4} drop\n }}\n}}\n"
        ),
    );
    let start = Instant::now();
    assert!(!lab.http_get(OTHER4, 8081, Duration::from_secs(1)));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(lab.http_get(ATTACKER4, 8081, t));
}

/// Issue 13: wrk's keep-alive HTTP flood and slowhttptest's held connections reach the users'
/// server on the victim (tests/deps.sh installs both).
#[test]
fn issue13_wrk_and_slowhttptest_reach_the_victims_server() {
    let Some((_serial, lab)) = start("issue13_http_tools") else {
        return;
    };
    let out = lab
        .spawn_wrk(80, 50, Duration::from_secs(2))
        .finish(Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("wrk: {text}");
    assert!(out.status.success(), "wrk: {out:?}");
    let requests: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk's summary: {text}"));
    assert!(requests > 100.0, "{requests} requests a second");
    assert!(!text.contains("Non-2xx"), "every answer a 200: {text}");

    let mut slow = lab.spawn_slowloris(80, 200, 100, Duration::from_secs(5));
    let mut held = 0;
    wait_until(
        Duration::from_secs(10),
        "slowhttptest's connections",
        || {
            let ss = lab
                .victim
                .run_ok(&["ss", "-Htn", "state", "established", "( sport = :80 )"]);
            held = ss.lines().filter(|l| l.contains(ATTACKER4)).count();
            held >= 150
        },
    );
    eprintln!("slowhttptest: {held} connections held open on the victim");
    assert!(slow.running(), "{}", slow.stderr());
    slow.terminate();
}
