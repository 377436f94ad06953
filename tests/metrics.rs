//! Issue 9: `/metrics` of the real daemon, scraped from inside its namespace. During a real
//! flood the incident gauge is 1 and the drop counter of the ban set rises between scrapes (as
//! the kernel's named counter does); Prometheus's own linter accepts every scrape, and a real
//! Prometheus server scraping every second sees the incident; after the incident the gauge is
//! back at 0, and the drop counter stays monotonic when a reload replaces the table (the
//! kernel's counter restarts from 0). Bad requests get errors, slow and silent clients are
//! closed after a timeout, and none of them holds up the daemon's ticks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{dump_counter, Agent, Setup};
use crate::lab::{self, Lab, UdpFlood, ATTACKER4, VICTIM4};

const PORT: u16 = 9947;
const SECTIONS: &str = "[[service]]\nport = 27015\nproto = \"udp\"\n\n\
    [sense]\nconntrack_interval = \"1s\"\n\n[detection]\nhold = \"2s\"\n\n";

/// A TCP connection to `port` on the victim's loopback: opened by a thread that enters the
/// victim's network namespace first (the socket stays in it).
fn connect(lab: &Lab, port: u16) -> TcpStream {
    let path = format!("/run/netns/{}", lab.victim.name());
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: moves this short-lived thread (only) into the namespace; the fd is ours.
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        let stream =
            TcpStream::connect(("127.0.0.1", port)).expect("connect to the victim's loopback");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    })
    .join()
    .unwrap()
}

/// An HTTP response: status code, headers (lowercase names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` and reads the response to the end.
fn request(lab: &Lab, port: u16, raw: &[u8]) -> Response {
    let mut stream = connect(lab, port);
    stream.write_all(raw).unwrap();
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("the response, then the close");
    let text = String::from_utf8(bytes).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `GET /metrics`: the exposition, checked for status, type, length and by promtool.
pub(crate) fn scrape(lab: &Lab) -> String {
    let r = request(lab, PORT, b"GET /metrics HTTP/1.1\r\nHost: ftagent\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.header("connection"), Some("close"));
    promtool_check(&r.body);
    r.body
}

/// `promtool check metrics` (Debian package `prometheus`, installed by tests/deps.sh): the
/// exposition format and Prometheus's naming conventions. Without promtool the check is
/// skipped with a note, unless CI is set.
fn promtool_check(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = spawned else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is needed (tests/deps.sh installs prometheus)"
        );
        eprintln!("promtool not installed: the lint is skipped");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

/// The value of the sample `name` with `label` (or without labels).
pub(crate) fn value(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let series = match label {
        Some((k, v)) => format!("{name}{{{k}=\"{v}\"}} "),
        None => format!("{name} "),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
}

/// The sum of every sample of `name`.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn dropped_ban4(text: &str) -> f64 {
    value(text, "ftagent_dropped_packets_total", Some(("set", "ban4"))).expect("drop counter")
}

fn wait_for(agent: &Agent, name: &str, timeout: Duration) -> Value {
    let find = || agent.all_events().into_iter().find(|e| e["event"] == name);
    lab::wait_until(timeout, name, || find().is_some());
    find().unwrap()
}

/// A real Prometheus server in the victim namespace scraping the agent every second, if the
/// binary is installed.
fn prometheus(lab: &Lab) -> Option<lab::Proc> {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "prometheus is needed");
        eprintln!("prometheus not installed: the real-server part is skipped");
        return None;
    }
    let config = lab.dir().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: ftagent\n    static_configs:\n      - targets: ['127.0.0.1:{PORT}']\n"
        ),
    )
    .unwrap();
    let storage = lab.dir().join("prometheus-data");
    Some(lab.victim.spawn(&[
        "prometheus",
        &format!("--config.file={}", config.display()),
        &format!("--storage.tsdb.path={}", storage.display()),
        "--web.listen-address=127.0.0.1:9090",
        "--log.level=warn",
    ]))
}

/// An instant query to that server: the first result's value, if any.
fn query(lab: &Lab, expr: &str) -> Option<f64> {
    let raw = format!("GET /api/v1/query?query={expr} HTTP/1.0\r\n\r\n");
    let r = request(lab, 9090, raw.as_bytes());
    let v: Value = serde_json::from_str(&r.body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn issue9_metrics_show_the_incident_and_rising_drop_counters() {
    let Some((_guard, lab)) = lab::start("metrics") else {
        return;
    };
    let sections = format!("{SECTIONS}[mitigation]\nmode = \"mitigate\"\n");
    let setup = Setup {
        agent: "warmup = \"3s\"",
        sections: &sections,
        ..Setup::default()
    };
    let mut agent = Agent::configured(&lab, setup);
    agent.start();
    let server = prometheus(&lab);
    lab.ping(ATTACKER4, VICTIM4, 100);
    std::thread::sleep(Duration::from_secs(2));

    let before = scrape(&lab);
    assert_eq!(sum(&before, "ftagent_incidents_open"), 0.0, "{before}");
    assert_eq!(dropped_ban4(&before), 0.0);
    assert!(
        value(
            &before,
            "ftagent_build_info",
            Some(("version", env!("CARGO_PKG_VERSION")))
        ) == Some(1.0),
        "{before}"
    );

    let flood = UdpFlood {
        src: ATTACKER4,
        dst: VICTIM4,
        sport: 40000,
        dport: Some(27015),
        payload: 64,
    };
    let generator = lab.udp_flood(&flood, 500_000, 50_000);
    wait_for(&agent, "attack_start", Duration::from_secs(10));
    wait_for(&agent, "mitigation_applied", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let first = scrape(&lab);
    std::thread::sleep(Duration::from_secs(1));
    let second = scrape(&lab);
    let kernel = dump_counter(&agent.dump(), "drop_ban4").unwrap();
    let (d1, d2) = (dropped_ban4(&first), dropped_ban4(&second));
    eprintln!(
        "issue9: metrics: during the flood drop_ban4 {d1} then {d2} packets one second later (kernel, read after: {kernel})"
    );
    assert_eq!(
        value(
            &first,
            "ftagent_incidents_open",
            Some(("vector", "udp_flood"))
        ),
        Some(1.0),
        "{first}"
    );
    assert_eq!(sum(&first, "ftagent_incidents_open"), 1.0);
    assert!(
        value(
            &first,
            "ftagent_mitigations_active",
            Some(("action", "ban"))
        ) >= Some(1.0),
        "{first}"
    );
    assert!(value(&first, "ftagent_set_elements", Some(("set", "ban4"))) >= Some(1.0));
    assert_eq!(
        value(
            &first,
            "ftagent_set_capacity_elements",
            Some(("set", "ban4"))
        ),
        Some(65536.0)
    );
    assert!(
        d1 > 0.0 && d2 > d1,
        "the drop counter rises: {d1} then {d2}"
    );
    assert!(
        d2 <= kernel as f64,
        "the metric is the kernel's counter: {d2} > {kernel}"
    );
    assert!(
        value(
            &second,
            "ftagent_dropped_bytes_total",
            Some(("set", "ban4"))
        ) > Some(d2 * 64.0),
        "bytes too"
    );
    assert!(value(&second, "ftagent_bans_total", Some(("by", "incident"))) >= Some(1.0));

    if server.is_some() {
        // Prometheus itself parsed our scrapes (`up` is 0 when it cannot) and sees the incident.
        let seen = Instant::now();
        lab::wait_until(
            Duration::from_secs(15),
            "Prometheus sees the incident",
            || query(&lab, "sum(ftagent_incidents_open)") == Some(1.0),
        );
        assert_eq!(query(&lab, "up{job=\"ftagent\"}"), Some(1.0));
        eprintln!(
            "issue9: metrics: a real Prometheus (1 s scrapes) saw ftagent_incidents_open = 1 within {} ms of asking",
            seen.elapsed().as_millis()
        );
    }

    generator.finish(Duration::from_secs(60));
    lab.assert_users_served(0.95);
    wait_for(&agent, "attack_end", Duration::from_secs(20));
    let after = scrape(&lab);
    let d3 = dropped_ban4(&after);
    assert_eq!(sum(&after, "ftagent_incidents_open"), 0.0, "{after}");
    assert_eq!(
        value(
            &after,
            "ftagent_incidents_total",
            Some(("vector", "udp_flood"))
        ),
        Some(1.0)
    );
    assert!(d3 >= d2);

    // A reload that resizes a ban set replaces the table: the kernel's counters restart from
    // 0, the metric does not go back.
    let reloaded = Setup {
        agent: "warmup = \"3s\"",
        nft: "ban4_size = 65000",
        sections: &sections,
        ..Setup::default()
    };
    agent.reconfigure(reloaded);
    agent.daemon.as_ref().unwrap().signal(libc::SIGHUP);
    lab::wait_until(Duration::from_secs(10), "the table replaced", || {
        value(
            &scrape(&lab),
            "ftagent_set_capacity_elements",
            Some(("set", "ban4")),
        ) == Some(65000.0)
    });
    std::thread::sleep(Duration::from_millis(500));
    let kernel = dump_counter(&agent.dump(), "drop_ban4").unwrap();
    let last = scrape(&lab);
    eprintln!(
        "issue9: metrics: after the table was replaced the kernel's drop_ban4 is {kernel}, the metric {}",
        dropped_ban4(&last)
    );
    assert!((kernel as f64) < d3, "the kernel's counter restarted");
    assert!(
        dropped_ban4(&last) >= d3,
        "monotonic: {} < {d3}",
        dropped_ban4(&last)
    );
    assert_eq!(
        value(&last, "ftagent_config_last_reload_successful", None),
        Some(1.0)
    );
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn issue9_bad_requests_get_errors_and_slow_clients_never_stall_the_daemon() {
    let Some((_guard, lab)) = lab::start("metrics-bad") else {
        return;
    };
    let mut agent = Agent::configured(&lab, Setup::default());
    agent.start();
    let timed = |raw: &[u8]| {
        let t = Instant::now();
        let r = request(&lab, PORT, raw);
        (r, t.elapsed())
    };
    let (baseline, baseline_took) = timed(b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(baseline.status, 200);

    // Clients that hold their connection: silent, stopping mid-request, never reading.
    let mut silent = connect(&lab, PORT);
    let mut slow = connect(&lab, PORT);
    slow.write_all(b"GET /metr").unwrap();
    let mut deaf = connect(&lab, PORT);
    deaf.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let held = Instant::now();

    let cases: [(&[u8], u16); 6] = [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            405,
        ),
        (b"GET /status HTTP/1.1\r\n\r\n", 404),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", 200),
        (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", 200),
    ];
    for (raw, want) in cases {
        let (r, took) = timed(raw);
        assert_eq!(
            r.status,
            want,
            "{:?}: {}",
            String::from_utf8_lossy(raw),
            r.body
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    let huge = format!(
        "GET /metrics HTTP/1.1\r\n{}\r\n",
        "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
            .repeat(300)
    );
    let (r, _) = timed(huge.as_bytes());
    assert_eq!(r.status, 431, "a 25 KB head: {}", r.body);

    // The daemon ticks on while they hang: the counters it reads each tick see these pings.
    let before = scrape(&lab);
    lab.ping(ATTACKER4, VICTIM4, 20);
    std::thread::sleep(Duration::from_millis(300));
    let (during, took) = timed(b"GET /metrics HTTP/1.1\r\n\r\n");
    let counted = value(
        &during.body,
        "ftagent_traffic_packets_total",
        Some(("counter", "l4_icmp")),
    )
    .unwrap()
        - value(
            &before,
            "ftagent_traffic_packets_total",
            Some(("counter", "l4_icmp")),
        )
        .unwrap();
    eprintln!(
        "issue9: metrics: scrape {} µs alone, {} µs beside three hanging clients; {counted} pings counted meanwhile",
        baseline_took.as_micros(),
        took.as_micros()
    );
    // (A ping or two may go to neighbour resolution.)
    assert!(
        counted >= 15.0,
        "ticks went on: {counted} of 20 pings counted"
    );
    assert!(
        took < baseline_took * 20 + Duration::from_millis(500),
        "{took:?} against {baseline_took:?}"
    );

    // The hanging clients are closed after the timeout (5 s), the silent and slow ones
    // without a response, the deaf one after its response.
    let mut buf = Vec::new();
    let _ = silent.read_to_end(&mut buf); // the client's own read timeout is 10 s
    let closed_after = held.elapsed();
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    assert!(
        closed_after >= Duration::from_secs(4) && closed_after < Duration::from_secs(9),
        "closed after {closed_after:?}"
    );
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    let mut buf = Vec::new();
    let _ = deaf.read_to_end(&mut buf);
    assert!(buf.starts_with(b"HTTP/1.1 200 OK\r\n"));
    eprintln!(
        "issue9: metrics: hanging clients closed {} ms after they connected",
        closed_after.as_millis()
    );

    // More connections than slots: the oldest go, a scrape still gets through.
    let crowd: Vec<TcpStream> = (0..40).map(|_| connect(&lab, PORT)).collect();
    assert_eq!(
        request(&lab, PORT, b"GET /metrics HTTP/1.1\r\n\r\n").status,
        200
    );
    drop(crowd);
    let daemon = agent.daemon.as_mut().unwrap();
    assert!(daemon.running(), "{}", daemon.stderr());
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}
