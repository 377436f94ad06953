//! The lab's real users: a third namespace joined to the victim by a veth of its own, whose
//! clients fetch a page over a fresh HTTP connection and ask the victim's DNS server, over
//! IPv4 and IPv6, from eight addresses of each family that are never the attacker's, at
//! about 400 packets a second in all; and the services they use, on the victim: HTTP on :80
//! (nginx, `web`) and DNS on :53/udp, both families. The clients print each second's results
//! (requests started in that second and how many succeeded) as JSON lines.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Netns, Proc, VICTIM4, VICTIM6};

/// The users' IPv4 addresses: 10.250.255.1–8 (outside every spoofed range of the lab).
pub const USERS4: [&str; 8] = [
    "10.250.255.1",
    "10.250.255.2",
    "10.250.255.3",
    "10.250.255.4",
    "10.250.255.5",
    "10.250.255.6",
    "10.250.255.7",
    "10.250.255.8",
];
/// The users' IPv6 addresses: fd00:250::ff:1–8.
pub const USERS6: [&str; 8] = [
    "fd00:250::ff:1",
    "fd00:250::ff:2",
    "fd00:250::ff:3",
    "fd00:250::ff:4",
    "fd00:250::ff:5",
    "fd00:250::ff:6",
    "fd00:250::ff:7",
    "fd00:250::ff:8",
];
/// The routes to the users on the victim's side.
pub const USERS4_NET: &str = "10.250.255.0/24";
pub const USERS6_NET: &str = "fd00:250::ff:0/120";

/// HTTP requests a second, per family; DNS queries a second, per family.
const HTTP_RATE: u32 = 10;
const DNS_RATE: u32 = 40;
/// How long a request may take and still count as served.
const HTTP_TIMEOUT_S: f64 = 2.0;
const DNS_TIMEOUT_S: f64 = 1.0;

/// The four kinds of request, in the order they are reported.
pub const KINDS: [&str; 4] = ["http4", "http6", "dns4", "dns6"];

/// One second of the clients' requests: `(succeeded, started)` per kind.
pub type Second = BTreeMap<String, (u64, u64)>;

/// The running services and clients. Dropping it stops them.
pub struct Users {
    _web: Proc,
    _dns: Proc,
    clients: Proc,
}

impl Users {
    /// Starts the services in `victim` (nginx's files under `dir`) and the clients in
    /// `users`; returns once both answer.
    pub fn start(victim: &Netns, users: &Netns, dir: &Path) -> Users {
        // One dual-stack socket, as the Python server before it had.
        let web = super::web::start(victim, dir, "[::]:80 ipv6only=off");
        let script = format!("{}{DNS_SERVICE_PY}", super::traffic::DNS_ANSWER_PY);
        let dns = victim.spawn(&["python3", "-c", &script]);
        let dns = super::traffic::wait_ready(dns, "the users' DNS server");
        let v4 = USERS4.join(",");
        let v6 = USERS6.join(",");
        let (h, d) = (HTTP_RATE.to_string(), DNS_RATE.to_string());
        let (ht, dt) = (HTTP_TIMEOUT_S.to_string(), DNS_TIMEOUT_S.to_string());
        let clients_py = format!("{}{CLIENTS_PY}", super::traffic::HTTP_FETCH_PY);
        let clients = users.spawn(&[
            "python3",
            "-c",
            &clients_py,
            &v4,
            &v6,
            VICTIM4,
            VICTIM6,
            &h,
            &d,
            &ht,
            &dt,
        ]);
        // Their results come seconds later (`assert_users_served` and the selftest check
        // them); here only that the clients run.
        let clients = super::traffic::wait_ready(clients, "the users' clients");
        Users {
            _web: web,
            _dns: dns,
            clients,
        }
    }

    /// The seconds reported so far: unix second → results.
    pub fn seconds(&self) -> BTreeMap<u64, Second> {
        let mut out = BTreeMap::new();
        for line in self.clients.stdout().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(t) = v["t"].as_u64() else { continue };
            let mut second = Second::new();
            for kind in KINDS {
                let ok = v[kind][0].as_u64().unwrap_or(0);
                let n = v[kind][1].as_u64().unwrap_or(0);
                second.insert(kind.to_string(), (ok, n));
            }
            out.insert(t, second);
        }
        out
    }

    /// Waits until the clients have reported every second up to `until` (their reports
    /// lag by the request timeouts), at most 15 s.
    pub fn wait_reported(&self, until: SystemTime) {
        let last = until
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.seconds().keys().next_back().is_none_or(|t| *t < last) {
            if Instant::now() >= deadline {
                eprintln!("lab: the users' clients have not reported second {last} in 15 s");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// DNS on [::]:53/udp, dual-stack: every query `dns_answer`'s (after `DNS_ANSWER_PY`).
const DNS_SERVICE_PY: &str = r#"
dns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
dns.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
dns.bind(('::', 53))
print('listening', flush=True)
while True:
    data, peer = dns.recvfrom(4096)
    reply = dns_answer(data)
    if reply:
        dns.sendto(reply, peer)
"#;

/// The clients (after `HTTP_FETCH_PY`): argv = v4 sources, v6 sources (comma-separated), victim v4, victim v6, HTTP
/// rate, DNS rate (per family, a second), HTTP timeout, DNS timeout. Each request runs in a
/// thread of its own, started on schedule whatever the earlier ones do. Every 0.5 s prints
/// the seconds whose requests have all timed out or ended: {"t": unix second, "http4":
/// [succeeded, started], …}.
const CLIENTS_PY: &str = r#"
import json, os, socket, struct, sys, threading, time
v4, v6, dst4, dst6 = sys.argv[1].split(','), sys.argv[2].split(','), sys.argv[3], sys.argv[4]
http_rate, dns_rate = float(sys.argv[5]), float(sys.argv[6])
http_timeout, dns_timeout = float(sys.argv[7]), float(sys.argv[8])
KINDS = ['http4', 'http6', 'dns4', 'dns6']
lock = threading.Lock()
stats = {}

def record(sec, kind, ok):
    with lock:
        c = stats.setdefault(sec, {k: [0, 0] for k in KINDS})[kind]
        c[1] += 1
        if ok:
            c[0] += 1

def http(src, dst, fam):
    return http_ok(src, dst, 80, http_timeout)

def dns(src, dst, fam):
    qid = int.from_bytes(os.urandom(2), 'big')
    question = b'\x04user\x03lab\x00' + struct.pack('!2H', 1, 1)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.bind((src, 0))
        s.sendto(struct.pack('!6H', qid, 0x0100, 1, 0, 0, 0) + question, (dst, 53))
        end = time.monotonic() + dns_timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            s.settimeout(left)
            data = s.recv(4096)
            if len(data) >= 12:
                rid, flags, qd, an = struct.unpack('!4H', data[:8])
                if rid == qid and flags & 0x8000 and not flags & 0xf and an >= 1:
                    return True
    except OSError:
        return False
    finally:
        s.close()

def one(sec, kind, fn, src, dst, fam):
    try:
        ok = fn(src, dst, fam)
    except OSError:
        ok = False
    record(sec, kind, ok)

def schedule(kind, fn, rate, srcs, dst, fam):
    start = time.time()
    n = 0
    while True:
        due = start + n / rate
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        elif wait < -1:
            # Far behind (a loaded machine): skip ahead rather than burst.
            n = int((time.time() - start) * rate)
            continue
        args = (int(due), kind, fn, srcs[n % len(srcs)], dst, fam)
        threading.Thread(target=one, args=args, daemon=True).start()
        n += 1

for kind, fn, rate, srcs, dst, fam in [
        ('http4', http, http_rate, v4, dst4, socket.AF_INET),
        ('http6', http, http_rate, v6, dst6, socket.AF_INET6),
        ('dns4', dns, dns_rate, v4, dst4, socket.AF_INET),
        ('dns6', dns, dns_rate, v6, dst6, socket.AF_INET6)]:
    threading.Thread(target=schedule, args=(kind, fn, rate, srcs, dst, fam), daemon=True).start()

lag = max(http_timeout, dns_timeout) + 1.5
print('listening', flush=True)
while True:
    time.sleep(0.5)
    ready = int(time.time() - lag)
    with lock:
        done = sorted(t for t in stats if t < ready)
        lines = [json.dumps(dict(t=t, **stats.pop(t))) for t in done]
    for l in lines:
        print(l, flush=True)
"#;
