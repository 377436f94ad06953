//! Bounded floods from the attacker namespace: paced floods (`pacer`: a steady rate the
//! victim's record checks, or pulses), trafgen at full speed and with its own per-second
//! bursts, hping3 for the benchmark's TCP floods, a Python client holding idle connections;
//! and the victim's own interface counter to check the agent against. Lab addresses only,
//! always bounded.

use std::time::{Duration, Instant};

use super::pacer::{self, Flood, Pace, Packets, Port, Src, Transport};
use super::{
    assert_lab_addr, Lab, Proc, ATTACKER4, ATTACKER_IF, ATTACKER_MAC, VICTIM4, VICTIM6, VICTIM_IF,
    VICTIM_MAC,
};

/// No flood is allowed more packets than this.
pub const MAX_FLOOD_PACKETS: u64 = 5_000_000;

/// A UDP packet for trafgen, from `src:sport` to `dst:dport` with `payload` bytes.
pub struct UdpFlood<'a> {
    pub src: &'a str,
    pub dst: &'a str,
    pub sport: u16,
    /// None: a random destination port for every packet.
    pub dport: Option<u16>,
    pub payload: usize,
}

impl UdpFlood<'_> {
    /// The lab's usual concentrated flood: from `src`, source port 40000, to `dst:dport`, 64
    /// bytes of payload.
    pub fn to_port<'a>(src: &'a str, dst: &'a str, dport: u16) -> UdpFlood<'a> {
        UdpFlood {
            src,
            dst,
            sport: 40000,
            dport: Some(dport),
            payload: 64,
        }
    }
}

impl Lab {
    /// A paced flood from the attacker's veth: `count` packets at `rate` pps, both scaled by
    /// the rate knob (`pacer::scale`), steady (a few packets every 250 µs) or in pulses.
    pub fn paced(
        &self,
        packets: Packets,
        count: u64,
        rate: u64,
        pulse: Option<(Duration, Duration)>,
    ) -> Flood {
        let link = pacer::Link {
            netns: self.attacker.name(),
            ifname: ATTACKER_IF,
            src_mac: mac(ATTACKER_MAC),
            dst_mac: mac(VICTIM_MAC),
        };
        pacer::start(&link, packets, count, Pace { rate, pulse })
    }

    /// The UDP flood `flood`, paced: `count` packets at `rate` pps (scaled by the knob).
    pub fn udp_flood(&self, flood: &UdpFlood, count: u64, rate: u64) -> Flood {
        self.paced(udp_packets(flood), count, rate, None)
    }

    /// The same flood as a pulse wave: `rate` pps for `on`, silent for `off`, repeated until
    /// `count` packets are sent.
    pub fn udp_pulses(
        &self,
        flood: &UdpFlood,
        count: u64,
        rate: u64,
        on: Duration,
        off: Duration,
    ) -> Flood {
        self.paced(udp_packets(flood), count, rate, Some((on, off)))
    }

    /// The same flood as trafgen sends it with `-b RATEpps`: each second's packets in one
    /// burst at the generator's full speed (how long the burst lasts depends on the
    /// machine: the victim's record says). Rate and count scaled by the knob.
    pub fn udp_flood_bursty(&self, flood: &UdpFlood, count: u64, rate: u64) -> Proc {
        self.spawn_trafgen_packet(
            &udp_template(flood),
            pacer::scale(count),
            Some(pacer::scale(rate)),
        )
    }

    /// Sends exactly `count` copies of the packet with trafgen at full speed (one CPU, no
    /// sysctl or IRQ changes: `--no-sock-mem --notouch-irq`) and waits for it.
    pub fn trafgen_udp(&self, flood: &UdpFlood, count: u64) {
        let out = self
            .spawn_trafgen(flood, count)
            .finish(Duration::from_secs(60));
        assert!(
            out.status.success(),
            "trafgen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the same full-speed flood in the background.
    pub fn spawn_trafgen(&self, flood: &UdpFlood, count: u64) -> Proc {
        self.spawn_trafgen_packet(&udp_template(flood), count, None)
    }

    /// A paced TCP flood of bare segments with `flags` (`pacer::TCP_SYN`, …) from `src` to
    /// `dst:dport`, random source ports in `pacer::FLOOD_PORTS` (whose SYN-ACKs the attacker
    /// leaves unanswered, as SYN flooders do) and random sequence numbers.
    pub fn tcp_flood(
        &self,
        src: &str,
        dst: &str,
        dport: u16,
        flags: u8,
        count: u64,
        rate: u64,
    ) -> Flood {
        let (lo, hi) = pacer::FLOOD_PORTS;
        let packets = Packets {
            src: Src::Addr(assert_lab_addr(src)),
            dst: assert_lab_addr(dst),
            sport: Port::Random(lo, hi),
            dport: Port::Fixed(dport),
            transport: Transport::Tcp { flags },
        };
        self.paced(packets, count, rate, None)
    }

    /// hping3 from the attacker namespace (the benchmark's TCP floods): `count` packets,
    /// `flags` like `-S` or `-A`, one every 50 µs as hping3 paces it (its own timing: what
    /// arrives is in the victim's record).
    pub fn spawn_hping_tcp(
        &self,
        src: &str,
        dst: &str,
        dport: u16,
        flags: &str,
        count: u64,
    ) -> Proc {
        assert_lab_addr(src);
        assert_lab_addr(dst);
        assert!((1..=MAX_FLOOD_PACKETS).contains(&count));
        let (count, dport) = (count.to_string(), dport.to_string());
        let args = [
            "timeout", "60", "hping3", "-q", "-n", flags, "-a", src, "-p", &dport, "-c", &count,
            "-i", "u50", dst,
        ];
        self.attacker.spawn(&args)
    }

    /// Waits until the victim's interface has received `packets` more than `from` and returns
    /// the wall-clock time it saw that: when a flood arrived. A thread in the victim's
    /// namespace reads its counter from /proc every 0.5 ms (no process per read).
    pub fn wait_arrival(&self, from: u64, packets: u64) -> std::time::SystemTime {
        let path = format!("/var/run/netns/{}", self.victim.name());
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("lab: open {path}: {e}"));
        let key = format!("{VICTIM_IF}:");
        let waiter = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a descriptor we own; CLONE_NEWNET moves only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "lab: setns: {}", std::io::Error::last_os_error());
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let rx = super::record::rx_packets(&key).expect("the victim's interface counter");
                if rx >= from + packets {
                    return std::time::SystemTime::now();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "lab: the flood never arrived"
                );
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        waiter
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Opens `count` TCP connections from `src` to `dst:port` and holds them open, idle, for
    /// `hold` (a Python client; the process ends by itself).
    pub fn hold_connections(
        &self,
        src: &str,
        dst: &str,
        port: u16,
        count: u32,
        hold: Duration,
    ) -> Proc {
        assert_lab_addr(src);
        assert_lab_addr(dst);
        let script = format!(
            "import socket, time\nconns = []\nfor _ in range({count}):\n    s = socket.socket()\n    s.bind(('{src}', 0))\n    s.connect(('{dst}', {port}))\n    conns.append(s)\nprint('held', len(conns), flush=True)\ntime.sleep({})\n",
            hold.as_secs()
        );
        self.attacker.spawn(&["python3", "-c", &script])
    }

    /// `per_second` TCP connection attempts from `src` to `dst:port` for `duration`, each
    /// closed at once: the shape of a credential-guessing loop.
    pub fn connect_loop(
        &self,
        src: &str,
        dst: &str,
        port: u16,
        per_second: u32,
        duration: Duration,
    ) {
        assert_lab_addr(src);
        assert_lab_addr(dst);
        let script = format!(
            "import socket, time\nend = time.time() + {}\nwhile time.time() < end:\n    s = socket.socket()\n    s.settimeout(0.5)\n    s.bind(('{src}', 0))\n    try:\n        s.connect(('{dst}', {port}))\n    except OSError:\n        pass\n    s.close()\n    time.sleep(1 / {per_second})\n",
            duration.as_secs()
        );
        let out = self.attacker.run(&["python3", "-c", &script]);
        assert!(
            out.status.success(),
            "connect loop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A TCP listener in the victim namespace that accepts and keeps every connection, for
    /// `hold`.
    pub fn accept_connections(&self, addr: &str, port: u16, hold: Duration) -> Proc {
        assert_lab_addr(addr);
        let script = format!(
            "import socket, time\nl = socket.socket()\nl.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\nl.bind(('{addr}', {port}))\nl.listen(1024)\nl.settimeout(0.2)\nkept = []\nend = time.time() + {}\nprint('listening', flush=True)\nwhile time.time() < end:\n    try:\n        kept.append(l.accept()[0])\n    except socket.timeout:\n        pass\n",
            hold.as_secs()
        );
        self.victim.spawn(&["python3", "-c", &script])
    }

    /// The victim's SNMP counters `names` (`nstat -saz`: absolute values, its history
    /// untouched), in order; panics on a name nstat does not show.
    pub fn victim_nstat(&self, names: &[&str]) -> Vec<u64> {
        let mut args = vec!["nstat", "-saz"];
        args.extend_from_slice(names);
        let out = self.victim.run_ok(&args);
        names
            .iter()
            .map(|name| {
                out.lines()
                    .find_map(|l| {
                        let mut f = l.split_whitespace();
                        (f.next() == Some(*name)).then(|| f.next()?.parse().ok())?
                    })
                    .unwrap_or_else(|| panic!("{name} in nstat: {out}"))
            })
            .collect()
    }

    /// Packets the victim's interface has received so far.
    pub fn victim_rx_packets(&self) -> u64 {
        self.victim_rx_packets_on(VICTIM_IF)
    }

    /// Packets the victim's interface `dev` (`VICTIM_IF`, `VICTIM_USERS_IF`) has received so
    /// far.
    pub fn victim_rx_packets_on(&self, dev: &str) -> u64 {
        let json = self
            .victim
            .run_ok(&["ip", "-s", "-j", "link", "show", "dev", dev]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j output");
        v[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .expect("rx packets in ip -s -j")
    }

    /// Sends `count` copies of a trafgen packet description (`{ eth(...), ... }`) from the
    /// attacker interface: `timeout 60 trafgen -P 1 --no-sock-mem --notouch-irq -C -n COUNT
    /// [-b RATEpps]`. The caller vouches that every address in `packet` is a lab address.
    fn spawn_trafgen_packet(&self, packet: &str, count: u64, rate: Option<u64>) -> Proc {
        assert!(
            (1..=MAX_FLOOD_PACKETS).contains(&count),
            "lab: flood of {count} packets"
        );
        assert!(rate != Some(0), "lab: flood at 0 pps");
        let count = count.to_string();
        let mut args = vec![
            "timeout",
            "60",
            "trafgen",
            "-o",
            ATTACKER_IF,
            "-P",
            "1",
            "--no-sock-mem",
            "--notouch-irq",
            "-C",
            "-n",
            &count,
        ];
        let rate_arg = rate.map(|r| format!("{r}pps"));
        if let Some(r) = &rate_arg {
            args.extend(["-b", r.as_str()]);
        }
        args.push(packet);
        self.attacker.spawn(&args)
    }

    /// A paced flood of fragments from `src` to `dst` (v4 or v6): first fragments of UDP
    /// datagrams that never complete, a random id each, 1,500-byte frames (`Transport::Fragment`).
    pub fn fragment_flood(&self, src: &str, dst: &str, count: u64, rate: u64) -> Flood {
        let v4 = assert_lab_addr(src).is_ipv4();
        let packets = Packets {
            src: Src::Addr(assert_lab_addr(src)),
            dst: assert_lab_addr(dst),
            sport: Port::Fixed(0),
            dport: Port::Fixed(0),
            transport: Transport::Fragment {
                payload: if v4 { 1472 } else { 1440 },
            },
        };
        self.paced(packets, count, rate, None)
    }

    /// A paced flood of another IP protocol (`proto`: 47 for GRE…) from `src` to `dst`, 64
    /// bytes after the IP header (`Transport::Raw`).
    pub fn ip_proto_flood(&self, src: &str, dst: &str, proto: u8, count: u64, rate: u64) -> Flood {
        let packets = Packets {
            src: Src::Addr(assert_lab_addr(src)),
            dst: assert_lab_addr(dst),
            sport: Port::Fixed(0),
            dport: Port::Fixed(0),
            transport: Transport::Raw { proto, payload: 64 },
        };
        self.paced(packets, count, rate, None)
    }

    /// A distributed UDP flood, paced: `count` packets at `rate` pps (scaled by the knob) to
    /// `VICTIM4:dport`, each from a random source in 10.250.2.0–10.250.254.255 (`Src::Spoofed4`:
    /// about 65,000 sources, none the attacker's, FAR4's or the users') and a random source
    /// port, 32 bytes of payload. The victim has no route back to these sources, so nothing
    /// it answers leaves its namespace.
    pub fn distributed_udp(&self, dport: u16, count: u64, rate: u64) -> Flood {
        let packets = Packets {
            src: Src::Spoofed4,
            dst: assert_lab_addr(VICTIM4),
            sport: Port::Random(1024, 65535),
            dport: Port::Fixed(dport),
            transport: Transport::Udp { payload: 32 },
        };
        self.paced(packets, count, rate, None)
    }

    /// The same distributed flood at trafgen's full speed (the benchmark's).
    pub fn spawn_distributed_udp(&self, dport: u16, count: u64) -> Proc {
        let packet = format!(
            "{{ eth(da={VICTIM_MAC}, sa={ATTACKER_MAC}), {}, udp(sp=drnd(1024, 65535), dp={dport}), fill(0x41, 32) }}",
            spoofed_ipv4_header()
        );
        self.spawn_trafgen_packet(&packet, count, None)
    }

    /// A spoofed SYN flood, paced: `count` TCP SYNs at `rate` pps (scaled by the knob) to
    /// `VICTIM4:dport` from random sources as `distributed_udp`, random source ports and
    /// sequence numbers, window 64240, valid checksums.
    ///
    /// The SYNs reach the victim's TCP stack (with rp_filter off in the victim namespace,
    /// the default here) but the victim has no route back to these sources, so no SYN-ACK
    /// (nor cookie) is ever sent and no half-open connection is kept: each SYN counts as a
    /// `TcpExtListenDrops` on a listening port, and the listen queue stays empty.
    pub fn syn_flood_spoofed(&self, dport: u16, count: u64, rate: u64) -> Flood {
        let packets = Packets {
            src: Src::Spoofed4,
            dst: assert_lab_addr(VICTIM4),
            sport: Port::Random(1024, 65535),
            dport: Port::Fixed(dport),
            transport: Transport::Tcp {
                flags: pacer::TCP_SYN,
            },
        };
        self.paced(packets, count, rate, None)
    }

    /// A flood to random ports, paced: `count` packets of `transport` at `rate` pps (scaled
    /// by the knob) from `src` (`Src::Spoofed4`: about 65,000 random sources, as
    /// `distributed_udp`) to `dst`, random source ports and a random destination port in
    /// 1024–65535 each (the users' services, :53 and :80, are below it).
    pub fn random_ports_flood(
        &self,
        src: Src,
        dst: &str,
        transport: Transport,
        count: u64,
        rate: u64,
    ) -> Flood {
        let packets = Packets {
            src,
            dst: assert_lab_addr(dst),
            sport: Port::Random(1024, 65535),
            dport: Port::Random(1024, 65535),
            transport,
        };
        self.paced(packets, count, rate, None)
    }

    /// A paced flood of bare TCP segments with `flags` (`pacer::TCP_ACK`, …) to `dst:dport`,
    /// each from a random source (`Src::Spoofed4` to an IPv4 `dst`, `Src::Spoofed6` to an
    /// IPv6 one), a random source port and random sequence (and acknowledgement) numbers.
    /// The victim answers none of them beyond its namespace: it has no route to the IPv4
    /// sources, and the IPv6 ones (`pacer::SPOOFED6`) are blackholed in it here (else each
    /// answer would cost a neighbour discovery).
    pub fn tcp_flood_spoofed(
        &self,
        dst: &str,
        dport: u16,
        flags: u8,
        count: u64,
        rate: u64,
    ) -> Flood {
        let dst = assert_lab_addr(dst);
        let src = if dst.is_ipv4() {
            Src::Spoofed4
        } else {
            self.victim
                .run_ok(&["ip", "-6", "route", "replace", "blackhole", pacer::SPOOFED6]);
            Src::Spoofed6
        };
        let packets = Packets {
            src,
            dst,
            sport: Port::Random(1024, 65535),
            dport: Port::Fixed(dport),
            transport: Transport::Tcp { flags },
        };
        self.paced(packets, count, rate, None)
    }

    /// The same SYN flood in IPv6: `count` SYNs at `rate` pps to `VICTIM6:dport`, each from a
    /// random source in `pacer::SPOOFED6` (blackholed in the victim, as `tcp_flood_spoofed`).
    pub fn syn_flood_spoofed6(&self, dport: u16, count: u64, rate: u64) -> Flood {
        self.tcp_flood_spoofed(VICTIM6, dport, pacer::TCP_SYN, count, rate)
    }

    /// A UDP echo server (python3) in the victim namespace on `VICTIM4:port`, started now;
    /// returns once it is bound. The guard stops it.
    pub fn udp_echo(&self, port: u16) -> Proc {
        let p = self
            .victim
            .spawn(&["python3", "-c", UDP_ECHO_PY, VICTIM4, &port.to_string()]);
        wait_ready(p, "udp_echo")
    }

    /// Sends `count` datagrams from `from` (the attacker namespace, IPv4) to `VICTIM4:port`,
    /// each from a socket of its own (a new flow to the victim's conntrack, never part of a
    /// connection), 10 ms apart; waits for no answer.
    pub fn udp_new_flows(&self, from: &str, port: u16, count: u32) {
        assert_lab_addr(from);
        assert!((1..=100).contains(&count), "lab: {count} datagrams");
        self.attacker.run_ok(&[
            "python3",
            "-c",
            UDP_NEW_FLOWS_PY,
            from,
            VICTIM4,
            &port.to_string(),
            &count.to_string(),
        ]);
    }

    /// The shape of a reflected amplification flood, paced: `count` UDP packets at `rate` pps
    /// (scaled by the knob) from `ATTACKER4:sport` (e.g. 53, 123, 11211) to VICTIM4, a random
    /// destination port each, `payload` bytes each.
    pub fn amplification(&self, sport: u16, payload: usize, count: u64, rate: u64) -> Flood {
        self.udp_flood(&amplification_flood(sport, payload), count, rate)
    }

    /// The same at trafgen's full speed (the benchmark's).
    pub fn spawn_amplification(&self, sport: u16, payload: usize, count: u64) -> Proc {
        self.spawn_trafgen(&amplification_flood(sport, payload), count)
    }

    /// A tiny DNS responder (python3, stdlib) in the attacker namespace on `ATTACKER4:53`/udp.
    /// Every A/IN query is answered with one A record 10.250.0.99 (question copied, QR, RD
    /// copied, RA, name as pointer 0xc00c, TTL 60); other queries get an empty NOERROR
    /// answer. Returns once the socket is bound; the guard stops it.
    pub fn dns_server(&self) -> Proc {
        self.dns_server_on(ATTACKER4)
    }

    /// The same responder on `addr:53`/udp (an IPv4 address of the attacker namespace).
    pub fn dns_server_on(&self, addr: &str) -> Proc {
        assert_lab_addr(addr);
        let script = format!("{DNS_ANSWER_PY}{}", DNS_SERVER_PY.replace("@ADDR@", addr));
        let p = self.attacker.spawn(&["python3", "-c", &script]);
        wait_ready(p, "dns_server")
    }

    /// Sends one A query for `name` from the victim namespace (VICTIM4, an ephemeral port) to
    /// `ATTACKER4:53` and returns whether a matching answer (same ID, same question, an A
    /// record 10.250.0.99) arrived within 1 s. `name` must be a plain DNS name
    /// (letters, digits, `-`, `_`, labels of 1..=63 bytes).
    pub fn dns_query(&self, name: &str) -> bool {
        self.dns_query_to(ATTACKER4, name)
    }

    /// The same query to the responder on `server` (`dns_server_on`).
    pub fn dns_query_to(&self, server: &str, name: &str) -> bool {
        assert_lab_addr(server);
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        assert!(
            !trimmed.is_empty()
                && trimmed.len() <= 253
                && trimmed.split('.').all(|l| {
                    (1..=63).contains(&l.len())
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }),
            "lab: not a plain DNS name: {name:?}"
        );
        let out = self.victim.run(&[
            "python3",
            "-c",
            DNS_QUERY_PY,
            VICTIM4,
            server,
            trimmed,
            "10.250.0.99",
        ]);
        match out.status.code() {
            Some(0) => true,
            Some(3) => false,
            _ => panic!(
                "lab: dns_query {name} did not run ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// One A query from a user's address (`USERS4[0]`) to the users' DNS service on
    /// `VICTIM4:53`; whether its answer (10.250.0.99) arrived within 1 s.
    pub fn users_dns_query(&self, name: &str) -> bool {
        let out = self.people.run(&[
            "python3",
            "-c",
            DNS_QUERY_PY,
            super::USERS4[0],
            VICTIM4,
            name,
            "10.250.0.99",
        ]);
        match out.status.code() {
            Some(0) => true,
            Some(3) => false,
            _ => panic!(
                "lab: users_dns_query {name} did not run ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// An HTTP server in the victim namespace on `VICTIM4:port` (nginx, `web`: 200 and the
    /// body `ok` for every GET). Returns once the socket listens; the guard stops it.
    pub fn http_server(&self, port: u16) -> Proc {
        super::web::start(&self.victim, self.dir(), &format!("{VICTIM4}:{port}"))
    }

    /// From the attacker namespace, bound to source address `from` (one of the attacker
    /// namespace's: ATTACKER4, OTHER4, FAR4), sends `GET / HTTP/1.0` to `VICTIM4:port` and
    /// returns whether a 200 response with body `ok` came back within `timeout` (connect
    /// included; at most 60 s). A refused, reset or silent connection is `false`.
    pub fn http_get(&self, from: &str, port: u16, timeout: Duration) -> bool {
        assert!(
            assert_lab_addr(from).is_ipv4(),
            "lab: http_get from {from}: IPv4 only"
        );
        assert!(
            !timeout.is_zero() && timeout <= Duration::from_secs(60),
            "lab: http_get timeout {timeout:?} outside (0, 60 s]"
        );
        let (port_s, secs) = (port.to_string(), format!("{:.3}", timeout.as_secs_f64()));
        let script = format!("{HTTP_FETCH_PY}{HTTP_GET_PY}");
        let p = self
            .attacker
            .spawn(&["python3", "-c", &script, from, VICTIM4, &port_s, &secs]);
        let out = p.finish(timeout + Duration::from_secs(5));
        match out.status.code() {
            Some(0) => true,
            Some(3) => false,
            _ => panic!(
                "lab: http_get from {from} to {VICTIM4}:{port} did not run ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// An HTTP flood of valid requests over keep-alive connections: wrk from the attacker's
    /// namespace (its first address, ATTACKER4), one thread, `connections` connections to
    /// `VICTIM4:port` for `duration` (at most 60 s). The users' server (nginx) keeps
    /// connections alive (HTTP/1.1). Its output ends with wrk's summary (`Requests/sec: …`).
    pub fn spawn_wrk(&self, port: u16, connections: u32, duration: Duration) -> Proc {
        assert!(
            (1..=10_000).contains(&connections) && duration <= Duration::from_secs(60),
            "lab: wrk with {connections} connections for {duration:?}"
        );
        let limit = (duration.as_secs() + 15).to_string();
        let (c, d) = (
            connections.to_string(),
            format!("{}s", duration.as_secs().max(1)),
        );
        let url = format!("http://{VICTIM4}:{port}/");
        self.attacker.spawn(&[
            "timeout",
            &limit,
            "wrk",
            "-t1",
            "-c",
            &c,
            "-d",
            &d,
            "--timeout",
            "2s",
            &url,
        ])
    }

    /// Slowloris: slowhttptest from the attacker's namespace opens `connections` connections
    /// to `VICTIM4:port` at `per_second` a second and keeps each one open with a header line
    /// every 10 s, for `duration` (at most 60 s).
    pub fn spawn_slowloris(
        &self,
        port: u16,
        connections: u32,
        per_second: u32,
        duration: Duration,
    ) -> Proc {
        assert!(
            (1..=10_000).contains(&connections)
                && per_second >= 1
                && duration <= Duration::from_secs(60),
            "lab: slowhttptest with {connections} connections at {per_second}/s for {duration:?}"
        );
        let limit = (duration.as_secs() + 15).to_string();
        let (c, r, l) = (
            connections.to_string(),
            per_second.to_string(),
            duration.as_secs().max(1).to_string(),
        );
        let url = format!("http://{VICTIM4}:{port}/");
        self.attacker.spawn(&[
            "timeout",
            &limit,
            "slowhttptest",
            "-H",
            "-c",
            &c,
            "-r",
            &r,
            "-i",
            "10",
            "-l",
            &l,
            "-x",
            "24",
            "-p",
            "3",
            "-t",
            "GET",
            "-u",
            &url,
        ])
    }

    /// `net.ipv4.tcp_syncookies` in the victim namespace (never the host's), e.g. `"1"`.
    pub fn syncookies(&self) -> String {
        self.victim
            .run_ok(&["sysctl", "-n", "net.ipv4.tcp_syncookies"])
            .trim()
            .to_string()
    }

    /// Sets `net.ipv4.tcp_syncookies` in the victim namespace (never the host's): `"0"`
    /// (off), `"1"` (when the SYN queue overflows) or `"2"` (always).
    pub fn set_syncookies(&self, value: &str) {
        assert!(
            matches!(value, "0" | "1" | "2"),
            "lab: tcp_syncookies value {value:?} is not 0, 1 or 2"
        );
        self.victim.sysctl("net.ipv4.tcp_syncookies", value);
    }
}

/// trafgen IPv4 header from a random source in 10.250.2.0–10.250.254.255 to VICTIM4: the
/// first two octets are fixed, so no source can ever leave 10.250.0.0/16, and the users'
/// 10.250.255.0/24 is never among them.
fn spoofed_ipv4_header() -> String {
    assert_lab_addr(VICTIM4);
    format!(
        "ipv4(sa=10.250.2.0, sa[2]=drnd(2, 254), sa[3]=drnd(), da={VICTIM4}, ttl=64, id=drnd())"
    )
}

fn amplification_flood(sport: u16, payload: usize) -> UdpFlood<'static> {
    UdpFlood {
        src: ATTACKER4,
        dst: VICTIM4,
        sport,
        dport: None,
        payload,
    }
}

/// The pacer's packets for `flood`.
fn udp_packets(flood: &UdpFlood) -> Packets {
    Packets {
        src: Src::Addr(assert_lab_addr(flood.src)),
        dst: assert_lab_addr(flood.dst),
        sport: Port::Fixed(flood.sport),
        dport: flood.dport.map_or(Port::Random(1, 65535), Port::Fixed),
        transport: Transport::Udp {
            payload: flood.payload,
        },
    }
}

/// trafgen's packet description for `flood`.
fn udp_template(flood: &UdpFlood) -> String {
    let v4 = assert_lab_addr(flood.src).is_ipv4();
    assert_eq!(
        v4,
        assert_lab_addr(flood.dst).is_ipv4(),
        "lab: flood mixes families"
    );
    let dport = flood.dport.map_or("drnd()".to_string(), |p| p.to_string());
    let ip = if v4 {
        format!("ipv4(saddr={}, daddr={}, ttl=64)", flood.src, flood.dst)
    } else {
        format!("ipv6(sa={}, da={}, hl=64)", flood.src, flood.dst)
    };
    format!(
        "{{ eth(da={VICTIM_MAC}, sa={ATTACKER_MAC}), {ip}, udp(sp={}, dp={dport}), fill(0x41, {}) }}",
        flood.sport, flood.payload
    )
}

/// "02:fa:…" as bytes.
fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("lab: a MAC address");
    }
    out
}

/// Waits up to 10 s for a spawned server to print `listening`; panics with its stderr if it
/// exits or stays silent.
/// argv: address, port. Echoes every datagram; prints `listening` once bound.
const UDP_ECHO_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    try:
        s.sendto(data, peer)
    except OSError:
        pass  # a spoofed peer the victim has no route to: the server lives on
"#;

/// argv: source, destination, port, count.
const UDP_NEW_FLOWS_PY: &str = r#"
import socket, sys, time
for i in range(int(sys.argv[4])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 0))
    s.sendto(b"new flow %d" % i, (sys.argv[2], int(sys.argv[3])))
    s.close()
    time.sleep(0.01)
"#;

pub(super) fn wait_ready(mut p: Proc, what: &str) -> Proc {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if p.stdout().contains("listening") {
            return p;
        }
        if !p.running() || Instant::now() >= deadline {
            let err = p.stderr();
            p.terminate();
            panic!("lab: {what} did not start (`{}`):\n{err}", p.cmd());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `dns_answer(query)`: the reply to a DNS query (bytes), or None for anything that is no
/// single-question query. Every A/IN query gets one A record 10.250.0.99 (question copied, QR,
/// RD copied, RA, the name as pointer 0xc00c, TTL 60); other queries an empty NOERROR answer.
/// Shared by the attacker's resolver and the victim's server (`users`).
pub(super) const DNS_ANSWER_PY: &str = r#"
import socket, struct
ANSWER = socket.inet_aton('10.250.0.99')
def dns_answer(data):
    if len(data) < 12:
        return None
    qid, flags, qd = struct.unpack('!3H', data[:6])
    if flags & 0x8000 or qd != 1:
        return None
    i = 12
    while i < len(data) and 0 < data[i] < 64:
        i += data[i] + 1
    if i >= len(data) or data[i] != 0 or i + 5 > len(data):
        return None
    qtype, qclass = struct.unpack('!2H', data[i + 1:i + 5])
    question = data[12:i + 5]
    rflags = 0x8000 | (flags & 0x7900) | 0x0080
    answer = b''
    if qtype == 1 and qclass == 1:
        answer = b'\xc0\x0c' + struct.pack('!HHIH', 1, 1, 60, 4) + ANSWER
    head = struct.pack('!6H', qid, rflags, 1, 1 if answer else 0, 0, 0)
    return head + question + answer
"#;

/// DNS responder (after `DNS_ANSWER_PY`); `@ADDR@` is replaced by the listening address.
const DNS_SERVER_PY: &str = r#"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('@ADDR@', 53))
print('listening', flush=True)
while True:
    data, peer = s.recvfrom(4096)
    reply = dns_answer(data)
    if reply:
        s.sendto(reply, peer)
"#;

/// One A query: argv = source address, server, name, expected address. Exit 0 when a
/// matching answer arrived within 1 s, 3 otherwise (1: the script itself failed).
const DNS_QUERY_PY: &str = r#"
import os, socket, struct, sys, time
src, server, name, want = sys.argv[1:5]
want = socket.inet_aton(want)
qid = int.from_bytes(os.urandom(2), 'big')
qname = b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\0'
question = qname + struct.pack('!2H', 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.sendto(struct.pack('!6H', qid, 0x0100, 1, 0, 0, 0) + question, (server, 53))
end = time.monotonic() + 1.0

def answered(data):
    if len(data) < 12:
        return False
    rid, flags, qd, an = struct.unpack('!4H', data[:8])
    if rid != qid or not flags & 0x8000 or flags & 0xf or qd != 1 or an < 1:
        return False
    if data[12:12 + len(question)] != question:
        return False
    i = 12 + len(question)
    for _ in range(an):
        if i + 2 > len(data):
            return False
        if data[i] & 0xc0 == 0xc0:
            i += 2
        else:
            while i < len(data) and data[i] != 0:
                i += data[i] + 1
            i += 1
        if i + 10 > len(data):
            return False
        rtype, rclass, ttl, rdlen = struct.unpack('!HHIH', data[i:i + 10])
        rdata = data[i + 10:i + 10 + rdlen]
        if rtype == 1 and rclass == 1 and rdata == want:
            return True
        i += 10 + rdlen
    return False

while True:
    left = end - time.monotonic()
    if left <= 0:
        sys.exit(3)
    s.settimeout(left)
    try:
        data, peer = s.recvfrom(4096)
    except socket.timeout:
        sys.exit(3)
    if peer == (server, 53) and answered(data):
        sys.exit(0)
"#;

/// One HTTP/1.0 GET (after `HTTP_FETCH_PY`): argv = source address, server, port, timeout in
/// seconds. Exit 0 when
/// a 200 with body `ok` came back in time, 3 otherwise (refused, reset, timeout, other
/// answer); 1 when the script itself failed (e.g. `bind` to an address not in the namespace).
const HTTP_GET_PY: &str = r#"
import sys
src, dst, port, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sys.exit(0 if http_ok(src, dst, port, limit) else 3)
"#;

/// `http_ok(src, dst, port, limit)`: one `GET / HTTP/1.0` from `src` (v4 or v6, as `dst`) on
/// a fresh connection; True when a 200 with body `ok` came back within `limit` seconds,
/// connect included; False when refused, reset, silent or answered otherwise. A `bind` to an
/// address the namespace does not own raises (the caller's error, not the server's).
/// Shared by `http_get` and the users' clients.
pub(super) const HTTP_FETCH_PY: &str = r#"
import socket, time
def http_ok(src, dst, port, limit):
    end = time.monotonic() + limit
    s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_STREAM)
    buf = b''
    try:
        s.bind((src, 0))
    except OSError:
        s.close()
        raise
    try:
        s.settimeout(limit)
        s.connect((dst, port))
        s.settimeout(max(end - time.monotonic(), 0.001))
        s.sendall(b'GET / HTTP/1.0\r\nHost: lab\r\n\r\n')
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            s.settimeout(left)
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    except OSError:
        return False
    finally:
        s.close()
    head, _, body = buf.partition(b'\r\n\r\n')
    status = head.split(b'\r\n', 1)[0].split()
    return len(status) >= 2 and status[1] == b'200' and body == b'ok'
"#;
