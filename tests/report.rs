//! Issue 9: webhooks and per-incident packet captures, with the real binary in a lab
//! namespace. Receivers (plain HTTP, HTTPS with a CA of the test's own, one that answers 500,
//! one that accepts and never answers) run on 127.0.0.1 of the victim namespace, beside the
//! agent. Real floods open the incidents; their captures are read back with tcpdump and
//! tshark.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::agent::{Agent, Setup};
use crate::lab::{self, Lab, Proc, UdpFlood, ATTACKER4, ATTACKER6, OTHER4, VICTIM4, VICTIM6};

const SECTIONS: &str = "[[service]]\nport = 27015\nproto = \"udp\"\n\n[[service]]\nport = 27016\nproto = \"udp\"\n\n\
    [[service]]\nport = 80\nproto = \"tcp\"\n\n[sense]\nconntrack_interval = \"1s\"\n\n[detection]\nhold = \"2s\"\n\n";
const PLAIN_PORT: u16 = 8081;
const TLS_PORT: u16 = 8443;
const HANG_PORT: u16 = 8082;
/// The hanging webhook's timeout: a loop that waited for it would be this late.
const HANG_TIMEOUT: Duration = Duration::from_secs(5);
const FLOOD_PPS: u64 = 50_000;

/// Receivers on 127.0.0.1: plain HTTP (500 on paths starting /fail, else 200), HTTPS with
/// the given certificate, and a port that accepts and never answers. Each request (and each
/// accepted hanging connection) is printed as one JSON line with its arrival time. Ends by
/// itself after 180 s.
const RECEIVERS_PY: &str = r#"
import json, socket, ssl, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
plain_port, tls_port, hang_port, cert, key = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
lock = threading.Lock()
def record(**fields):
    fields["t"] = time.time()
    with lock:
        print(json.dumps(fields), flush=True)
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        record(port=self.server.server_port, path=self.path, body=body,
               host=self.headers.get("X-Ftagent-Host"), ctype=self.headers.get("Content-Type"))
        self.send_response(500 if self.path.startswith("/fail") else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()
plain = ThreadingHTTPServer(("127.0.0.1", plain_port), Handler)
tls = ThreadingHTTPServer(("127.0.0.1", tls_port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
tls.socket = context.wrap_socket(tls.socket, server_side=True)
hang = socket.socket()
hang.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
hang.bind(("127.0.0.1", hang_port))
hang.listen(16)
def hold():
    held = []
    while True:
        connection, _ = hang.accept()
        held.append(connection)
        record(port=hang_port, path="(hang)")
for target in (plain.serve_forever, tls.serve_forever, hold):
    threading.Thread(target=target, daemon=True).start()
print(json.dumps({"listening": True}), flush=True)
time.sleep(180)
"#;

/// A CA and a server certificate for 127.0.0.1 signed by it (EC P-256), in `dir`: returns
/// (ca.pem, server.pem, server.key).
fn certificates(lab: &Lab) -> (PathBuf, PathBuf, PathBuf) {
    let dir = lab.dir();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec![
        "openssl",
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=ftagent test CA",
    ];
    ca.extend(ec);
    let (ca_key, ca_pem) = (path("ca.key"), path("ca.pem"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_pem]);
    lab.victim.run_ok(&ca);
    let mut csr = vec!["openssl", "req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    let (key, csr_path, pem) = (path("server.key"), path("server.csr"), path("server.pem"));
    csr.extend(["-keyout", &key, "-out", &csr_path]);
    lab.victim.run_ok(&csr);
    let ext = ext.to_str().unwrap();
    lab.victim.run_ok(&[
        "openssl",
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &csr_path,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-extfile",
        ext,
        "-out",
        &pem,
    ]);
    (ca_pem.into(), pem.into(), key.into())
}

fn start_receivers(lab: &Lab, cert: &Path, key: &Path) -> Proc {
    let ports = [PLAIN_PORT, TLS_PORT, HANG_PORT].map(|p| p.to_string());
    let mut p = lab.victim.spawn(&[
        "python3",
        "-c",
        RECEIVERS_PY,
        &ports[0],
        &ports[1],
        &ports[2],
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    ]);
    lab::wait_until(Duration::from_secs(10), "the receivers", || {
        assert!(p.running(), "receivers exited: {}", p.stderr());
        p.stdout().contains("listening")
    });
    p
}

/// The requests the receivers have seen so far.
fn requests(receivers: &Proc) -> Vec<Value> {
    receivers
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("t").is_some())
        .collect()
}

fn on_path(requests: &[Value], path: &str) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r["path"] == path)
        .cloned()
        .collect()
}

/// A request's body parsed as JSON.
fn body(request: &Value) -> Value {
    serde_json::from_str(request["body"].as_str().unwrap()).unwrap()
}

fn arrival(request: &Value) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(request["t"].as_f64().unwrap())
}

fn ts(e: &Value) -> SystemTime {
    humantime::parse_rfc3339(e["ts"].as_str().unwrap()).unwrap()
}

/// The first event named `name` that `pick` accepts, waiting up to `timeout`.
fn wait_event(
    agent: &Agent,
    name: &str,
    timeout: Duration,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    let find = || {
        agent
            .all_events()
            .into_iter()
            .find(|e| e["event"] == name && pick(e))
    };
    lab::wait_until(timeout, name, || find().is_some());
    find().unwrap()
}

/// The agent, warmed up for 3 s on light traffic, with `more` config sections.
fn warmed_up<'a>(lab: &'a Lab, more: &str) -> Agent<'a> {
    let sections = format!("{SECTIONS}{more}");
    let setup = Setup {
        agent: "warmup = \"3s\"",
        sections: &sections,
        ..Setup::default()
    };
    let mut agent = Agent::configured(lab, setup);
    agent.start();
    lab.ping(ATTACKER4, VICTIM4, 100);
    std::thread::sleep(Duration::from_secs(2));
    agent
}

fn flood(src: &'static str, dport: u16) -> UdpFlood<'static> {
    UdpFlood {
        src,
        dst: VICTIM4,
        sport: 40000,
        dport: Some(dport),
        payload: 64,
    }
}

/// Issue 9: webhooks in every shape get their events — `attack_start` within a second of the
/// event — over HTTP and HTTPS; a receiver answering 500 is retried and counted as failed;
/// and while a webhook hangs on a receiver that never answers, a second, concurrent flood is
/// detected and mitigated as fast as the first.
#[test]
fn issue9_webhooks_deliver_and_a_hanging_receiver_delays_nothing() {
    let Some((_guard, lab)) = lab::start("report-webhooks") else {
        return;
    };
    let (ca, cert, key) = certificates(&lab);
    let receivers = start_receivers(&lab, &cert, &key);
    let hooks = format!(
        "[[webhook]]\nurl = \"http://127.0.0.1:{PLAIN_PORT}/generic\"\n\n\
         [[webhook]]\nurl = \"https://127.0.0.1:{TLS_PORT}/slack\"\nformat = \"slack\"\nca_file = \"{}\"\n\n\
         [[webhook]]\nurl = \"http://127.0.0.1:{PLAIN_PORT}/discord\"\nformat = \"discord\"\nevents = [\"attack_start\"]\n\n\
         [[webhook]]\nurl = \"http://127.0.0.1:{PLAIN_PORT}/fail-secret\"\nretries = 2\nevents = [\"attack_start\"]\n\n\
         [[webhook]]\nurl = \"http://127.0.0.1:{HANG_PORT}/hang\"\ntimeout = \"{}s\"\nretries = 1\nevents = [\"attack_start\"]\n",
        ca.display(),
        HANG_TIMEOUT.as_secs()
    );
    let mut agent = warmed_up(&lab, &hooks);

    // The first flood: no webhook is hanging yet.
    let spawned_1 = SystemTime::now();
    let flood_1 = lab.udp_flood(&flood(ATTACKER4, 27015), 350_000, FLOOD_PPS);
    let start_1 = wait_event(&agent, "attack_start", Duration::from_secs(10), |_| true);
    let incident_1 = start_1["incident"].as_str().unwrap().to_string();
    let latency_1 = ts(&start_1).duration_since(spawned_1).unwrap_or_default();

    // The hanging receiver has taken the connection for attack_start and holds it.
    lab::wait_until(
        Duration::from_secs(3),
        "the hanging receiver's connection",
        || !on_path(&requests(&receivers), "(hang)").is_empty(),
    );
    let hung_at = arrival(&on_path(&requests(&receivers), "(hang)")[0]);

    // The second flood, from another source to another port, while the webhook hangs.
    let spawned_2 = SystemTime::now();
    let flood_2 = lab.udp_flood(&flood(OTHER4, 27016), 150_000, FLOOD_PPS);
    let start_2 = wait_event(&agent, "attack_start", Duration::from_secs(10), |e| {
        e["incident"] != incident_1.as_str()
    });
    let incident_2 = start_2["incident"].as_str().unwrap().to_string();
    assert_eq!(start_2["port"], 27016, "{start_2}");
    let latency_2 = ts(&start_2).duration_since(spawned_2).unwrap_or_default();
    let applied_2 = wait_event(&agent, "mitigation_applied", Duration::from_secs(5), |e| {
        e["incident"] == incident_2.as_str()
    });
    let mitigation_delay_2 = ts(&applied_2)
        .duration_since(ts(&start_2))
        .unwrap_or_default();
    let hang_pending = ts(&start_2).duration_since(hung_at).unwrap_or_default();
    eprintln!(
        "issue9: detection {} ms after the flood started without a hanging webhook, {} ms with one \
         hanging for {} ms already; mitigation {} ms after attack_start",
        latency_1.as_millis(),
        latency_2.as_millis(),
        hang_pending.as_millis(),
        mitigation_delay_2.as_millis()
    );
    assert!(
        hang_pending < HANG_TIMEOUT,
        "the second incident opened while the webhook still hung ({hang_pending:?})"
    );
    assert!(
        latency_2 < HANG_TIMEOUT / 2,
        "detection not held up by the hanging webhook: {latency_2:?} (without: {latency_1:?})"
    );
    assert!(
        mitigation_delay_2 <= Duration::from_millis(150),
        "mitigated within a tick: {mitigation_delay_2:?}"
    );

    // Generic: every event of both incidents, as printed, attack_start within a second.
    for incident in [&incident_1, &incident_2] {
        lab::wait_until(
            Duration::from_secs(5),
            "attack_start at the generic receiver",
            || {
                on_path(&requests(&receivers), "/generic")
                    .iter()
                    .any(|r| body(r)["incident"] == incident.as_str())
            },
        );
    }
    for start in [&start_1, &start_2] {
        let got = on_path(&requests(&receivers), "/generic")
            .into_iter()
            .find(|r| {
                body(r)["event"] == "attack_start" && body(r)["incident"] == start["incident"]
            })
            .unwrap();
        let delay = arrival(&got).duration_since(ts(start)).unwrap_or_default();
        eprintln!(
            "issue9: generic webhook got attack_start {} ms after its ts",
            delay.as_millis()
        );
        assert!(delay < Duration::from_secs(1), "{delay:?}");
        assert_eq!(&body(&got), start, "the event as printed");
        assert_eq!(got["ctype"], "application/json");
        assert!(got["host"].as_str().is_some_and(|h| !h.is_empty()), "{got}");
    }

    flood_1.finish(Duration::from_secs(60));
    flood_2.finish(Duration::from_secs(60));
    lab.assert_users_served(0.95);
    for incident in [&incident_1, &incident_2] {
        wait_event(&agent, "attack_end", Duration::from_secs(20), |e| {
            e["incident"] == incident.as_str()
        });
    }
    // Every event of each incident reaches the generic webhook, in order.
    lab::wait_until(
        Duration::from_secs(5),
        "attack_end at the generic receiver",
        || {
            on_path(&requests(&receivers), "/generic")
                .iter()
                .filter(|r| body(r)["event"] == "attack_end")
                .count()
                == 2
        },
    );
    for incident in [&incident_1, &incident_2] {
        let printed: Vec<Value> = agent
            .all_events()
            .into_iter()
            .filter(|e| e["incident"] == incident.as_str() && e["event"] != "attack_update")
            .collect();
        let received: Vec<Value> = on_path(&requests(&receivers), "/generic")
            .iter()
            .map(body)
            .filter(|b| b["incident"] == incident.as_str())
            .collect();
        assert_eq!(received, printed, "incident {incident}");
        // (A ban both incidents share is lifted with the later one: the earlier may have no
        // mitigation_removed.)
        let names: Vec<&str> = received
            .iter()
            .filter_map(|e| e["event"].as_str())
            .collect();
        assert_eq!(names.first(), Some(&"attack_start"), "{names:?}");
        for name in ["mitigation_applied", "attack_end"] {
            assert!(names.contains(&name), "{names:?}");
        }
    }
    let generic = on_path(&requests(&receivers), "/generic").len();

    // Slack over HTTPS (the test's CA): text and blocks, every event.
    let slack = on_path(&requests(&receivers), "/slack");
    assert_eq!(slack.len(), generic, "{slack:?}");
    let first = body(&slack[0]);
    let text = first["text"].as_str().unwrap();
    assert!(text.contains(": udp_flood on udp/27015"), "{text}");
    assert!(text.contains("capture: "), "{text}");
    assert_eq!(first["blocks"][0]["text"]["type"], "mrkdwn", "{first}");
    assert!(first["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap()
        .contains(&incident_1));

    // Discord: only attack_start, as asked.
    let discord: Vec<Value> = on_path(&requests(&receivers), "/discord")
        .iter()
        .map(body)
        .collect();
    assert_eq!(discord.len(), 2, "{discord:?}");
    assert!(discord[1]["content"]
        .as_str()
        .unwrap()
        .contains("udp_flood on udp/27016"));
    assert_eq!(
        discord[1]["embeds"][0]["footer"]["text"],
        format!("incident {incident_2}")
    );
    assert_eq!(
        discord[1]["allowed_mentions"]["parse"],
        serde_json::json!([])
    );

    // 500: each attack_start tried three times (two retries, 1 s and 2 s apart), then given up.
    lab::wait_until(
        Duration::from_secs(10),
        "six attempts at /fail-secret",
        || on_path(&requests(&receivers), "/fail-secret").len() >= 6,
    );
    let fails = on_path(&requests(&receivers), "/fail-secret");
    assert_eq!(fails.len(), 6);
    let gap = arrival(&fails[1])
        .duration_since(arrival(&fails[0]))
        .unwrap();
    assert!(
        gap >= Duration::from_millis(900),
        "backoff before the first retry: {gap:?}"
    );
    let log = agent.daemon.as_ref().unwrap().stderr();
    assert!(
        log.contains("webhook[4] http://127.0.0.1:8081/…: attack_start not delivered after 3 attempts: HTTP 500 (1 failed so far)"),
        "{log}"
    );
    assert!(
        !log.contains("fail-secret"),
        "no webhook path in the log: {log}"
    );

    // Stopping is not held up by the webhook still hanging.
    let stopping = Instant::now();
    let (status, log) = agent.stop();
    assert!(status.success(), "{status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    // The counters, as logged at the stop.
    let sent = format!("webhook[1] http://127.0.0.1:{PLAIN_PORT}/…: {generic} events sent, 0 failed, 0 retries, 0 dropped");
    assert!(log.contains(&sent), "{sent}: {log}");
    let failed =
        format!("webhook[4] http://127.0.0.1:{PLAIN_PORT}/…: 0 events sent, 2 failed, 4 retries");
    assert!(log.contains(&failed), "{failed}: {log}");
    let hanging = format!("webhook[5] http://127.0.0.1:{HANG_PORT}/…: 0 events sent");
    assert!(log.contains(&hanging), "{hanging}: {log}");
}

/// A pcap file's records as tcpdump prints them (`-tt -nn`): (epoch seconds, line).
fn tcpdump(path: &Path) -> Vec<(f64, String)> {
    let out = Command::new("tcpdump")
        .args(["-r", path.to_str().unwrap(), "-tt", "-nn"])
        .output()
        .expect("tcpdump runs (tests/deps.sh installs it)");
    assert!(
        out.status.success(),
        "tcpdump -r {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let t = l.split_whitespace().next().unwrap().parse().unwrap();
            (t, l.to_string())
        })
        .collect()
}

/// The same file's packet count as tshark reads it.
fn tshark_count(path: &Path) -> usize {
    let out = Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .output()
        .expect("tshark runs (tests/deps.sh installs it)");
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Complete records in a pcap file being written (its 24-byte header, then 16-byte record
/// headers with the captured length at offset 8, little-endian as ours are written).
fn pcap_records(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap_or_default();
    let (mut at, mut n) = (24, 0);
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        if at + 16 + len > data.len() {
            break;
        }
        at += 16 + len;
        n += 1;
    }
    n
}

/// Issue 9: an incident's capture, named by its events, opens with tcpdump and tshark,
/// starts with the IPv4 and IPv6 traffic from before `attack_start`, and holds no more than
/// `pcap.max_packets_per_incident` packets (and so no more bytes than that allows). Issue 13:
/// the flood goes on until the capture is full, however fast this machine samples it.
#[test]
fn issue9_incident_capture_starts_before_the_attack_and_keeps_its_cap() {
    let Some((_guard, lab)) = lab::start("report-pcap") else {
        return;
    };
    const CAP: usize = 3000;
    let pcap = format!(
        "[pcap]\nring_packets = 2048\nmax_packets_per_incident = {CAP}\nmax_disk_mib = 5\n"
    );
    let agent = warmed_up(&lab, &pcap);
    lab.ping(ATTACKER6, VICTIM6, 50);
    let generator = lab.udp_flood(&flood(ATTACKER4, 27015), 1_500_000, FLOOD_PPS);
    let start = wait_event(&agent, "attack_start", Duration::from_secs(10), |_| true);
    let incident = start["incident"].as_str().unwrap();
    let path = lab
        .dir()
        .join("state/pcap")
        .join(format!("{incident}.pcap"));
    assert_eq!(start["pcap"], path.to_str().unwrap(), "{start}");
    lab::wait_until(Duration::from_secs(40), "the capture to fill", || {
        pcap_records(&path) >= CAP
    });
    let sent = generator.terminate();
    eprintln!("issue9: the capture filled after {sent:?} of the flood");
    lab.assert_users_served(0.95);
    let end = wait_event(&agent, "attack_end", Duration::from_secs(20), |_| true);
    assert_eq!(end["pcap"], start["pcap"], "{end}");

    let packets = tcpdump(&path);
    let size = std::fs::metadata(&path).unwrap().len();
    let started = ts(&start).duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let before: Vec<&(f64, String)> = packets.iter().filter(|(t, _)| *t < started).collect();
    let icmp4 = before
        .iter()
        .filter(|(_, l)| l.contains("ICMP echo request"))
        .count();
    let icmp6 = before
        .iter()
        .filter(|(_, l)| l.contains("ICMP6, echo request"))
        .count();
    eprintln!(
        "issue9: capture of {} packets, {size} bytes; {} from before attack_start (the first {:.3} s \
         earlier), {icmp4} ICMP and {icmp6} ICMPv6 echo requests among them",
        packets.len(),
        before.len(),
        started - packets[0].0
    );
    assert_eq!(packets.len(), CAP, "the flood filled it, and no further");
    assert!(size <= 24 + CAP as u64 * (16 + 128), "{size} bytes");
    assert!(
        packets[0].0 < started - 1.0,
        "it starts before the attack: {}",
        packets[0].1
    );
    assert!(
        icmp4 > 0 && icmp6 > 0,
        "the pings before the flood are in it"
    );
    assert!(
        packets
            .iter()
            .any(|(t, l)| *t > started && l.contains(&format!("{VICTIM4}.27015: UDP"))),
        "the flood is in it"
    );
    assert_eq!(
        tshark_count(&path),
        packets.len(),
        "tshark reads the same packets"
    );
}
