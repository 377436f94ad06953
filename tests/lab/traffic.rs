//! Bounded floods from the attacker namespace: trafgen for exact packet counts at high rate,
//! hping3 for TCP flag floods, a Python client holding idle connections; and the victim's own
//! interface counter to check the agent against. Lab addresses only, always bounded.

use std::time::Duration;

use super::{assert_lab_addr, Lab, Proc, ATTACKER_IF, ATTACKER_MAC, VICTIM_IF, VICTIM_MAC};

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

impl Lab {
    /// Sends exactly `count` copies of the packet with trafgen (one CPU, no sysctl or IRQ
    /// changes: `--no-sock-mem --notouch-irq`), at `rate` packets per second when given, else as fast as it can.
    pub fn trafgen_udp(&self, flood: &UdpFlood, count: u64, rate: Option<u64>) {
        let out = self
            .spawn_trafgen(flood, count, rate)
            .finish(Duration::from_secs(60));
        assert!(
            out.status.success(),
            "trafgen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the same flood in the background.
    pub fn spawn_trafgen(&self, flood: &UdpFlood, count: u64, rate: Option<u64>) -> Proc {
        let v4 = assert_lab_addr(flood.src).is_ipv4();
        assert_eq!(
            v4,
            assert_lab_addr(flood.dst).is_ipv4(),
            "lab: flood mixes families"
        );
        assert!(
            (1..=MAX_FLOOD_PACKETS).contains(&count),
            "lab: flood of {count} packets"
        );
        let dport = flood.dport.map_or("drnd()".to_string(), |p| p.to_string());
        let ip = if v4 {
            format!("ipv4(saddr={}, daddr={}, ttl=64)", flood.src, flood.dst)
        } else {
            format!("ipv6(sa={}, da={}, hl=64)", flood.src, flood.dst)
        };
        let packet = format!(
            "{{ eth(da={VICTIM_MAC}, sa={ATTACKER_MAC}), {ip}, udp(sp={}, dp={dport}), fill(0x41, {}) }}",
            flood.sport, flood.payload
        );
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
        args.push(&packet);
        self.attacker.spawn(&args)
    }

    /// hping3 from the attacker namespace with a packet count: `flags` like `-S` or `-A`.
    pub fn hping_tcp(&self, src: &str, dst: &str, dport: u16, flags: &str, count: u64) {
        let out = self
            .spawn_hping_tcp(src, dst, dport, flags, count)
            .finish(Duration::from_secs(60));
        // hping3 exits non-zero when no reply came: only a timeout is a failure here.
        assert_ne!(out.status.code(), Some(124), "hping3 timed out");
    }

    /// The same flood in the background.
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

    /// Waits until the victim's interface has received `packets` more than `from`, polling
    /// every 5 ms, and returns the wall-clock time it saw that: when a flood arrived.
    pub fn wait_arrival(&self, from: u64, packets: u64) -> std::time::SystemTime {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.victim_rx_packets() >= from + packets {
                return std::time::SystemTime::now();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lab: the flood never arrived"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
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

    /// Packets the victim's interface has received so far.
    pub fn victim_rx_packets(&self) -> u64 {
        let json = self
            .victim
            .run_ok(&["ip", "-s", "-j", "link", "show", "dev", VICTIM_IF]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j output");
        v[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .expect("rx packets in ip -s -j")
    }
}
