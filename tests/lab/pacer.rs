//! A paced packet generator: a thread of the test process that enters the attacker namespace,
//! opens an AF_PACKET socket on its veth and sends frames built here (UDP or TCP, IPv4 or
//! IPv6, fixed or random sources and ports, valid checksums) at a steady rate, a few packets
//! every 250 µs, or in pulses (on/off). trafgen cannot do this: its `-b` sends each second's
//! packets in one burst and its `-t` slow mode tops out near 30 kpps here. Every paced rate is
//! scaled by the `FTAGENT_TEST_RATE` knob (`scale`); the flood keeps its length, so its packet
//! count scales with it. Bounded by a packet count and a deadline; dropping the handle stops it.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::assert_lab_addr;
use super::traffic::MAX_FLOOD_PACKETS;

/// The environment variable that scales every paced flood rate (and count): `0.5`, `2`, …
pub const RATE_KNOB: &str = "FTAGENT_TEST_RATE";

/// The knob's value (1 when unset); panics on a value that is not a positive number.
pub fn rate_factor() -> f64 {
    match std::env::var(RATE_KNOB) {
        Ok(v) if !v.trim().is_empty() => {
            let f: f64 = v
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("lab: {RATE_KNOB}={v:?}: {e}"));
            assert!(
                f.is_finite() && (0.05..=20.0).contains(&f),
                "lab: {RATE_KNOB}={v:?} outside 0.05..=20"
            );
            f
        }
        _ => 1.0,
    }
}

/// `n` (a paced rate, or the packet count of a paced flood) scaled by the knob.
pub fn scale(n: u64) -> u64 {
    ((n as f64 * rate_factor()).round() as u64).max(1)
}

/// Where a packet field comes from.
#[derive(Clone, Copy, Debug)]
pub enum Src {
    /// One lab address.
    Addr(IpAddr),
    /// A random IPv4 source in 10.250.2.0–10.250.254.255 for every packet (about 65,000
    /// sources; never the attacker's 10.250.0.0/24, FAR4's 10.250.1.0/24 or the users'
    /// 10.250.255.0/24).
    Spoofed4,
    /// A random IPv6 source in `SPOOFED6` (fd00:250::1:0:0/96) for every packet: never a lab
    /// host's address.
    Spoofed6,
    /// A random one of the `hosts` addresses 10.250.`net`.1, .2, … for every packet: a few
    /// spoofed hosts of one /24 (`net` in 2..=254, as `Spoofed4`: no route back to them).
    Hosts4 { net: u8, hosts: u8 },
    /// `per_second` new IPv4 sources every second of the flood, each in a /24 of its own
    /// (10.250.2–254.x, as `Spoofed4`, cycling through the /24s), a random one of the
    /// second's for every packet: a flood whose sources keep changing.
    Rotating4 { per_second: u16 },
}

/// The range of `Src::Spoofed6`, inside the lab's fd00:250::/64.
pub const SPOOFED6: &str = "fd00:250::1:0:0/96";

/// A port: fixed, or random in a range for every packet.
#[derive(Clone, Copy, Debug)]
pub enum Port {
    Fixed(u16),
    Random(u16, u16),
}

/// The transport of every packet.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    /// UDP with `payload` bytes of 0x41.
    Udp { payload: usize },
    /// A bare TCP segment with these flags (`TCP_SYN`, `TCP_ACK`, …), a random sequence
    /// number, window 64240, no payload.
    Tcp { flags: u8 },
    /// The first fragment of a UDP datagram that never completes: IPv4 with more-fragments
    /// set (offset 0), IPv6 with a fragment header (offset 0, M set); a random id each,
    /// `payload` bytes of 0x41 (a multiple of 8). Ports are not used.
    Fragment { payload: usize },
    /// Another IP protocol (47: GRE…): `payload` bytes of 0x41 after the IP header, nothing
    /// else (the lab's victim has no tunnel to take them). Ports are not used.
    Raw { proto: u8, payload: usize },
}

/// The source ports of paced TCP floods from one address: above Linux's ephemeral range
/// (32768–60999), so the lab's attacker can leave the victim's answers to them unanswered.
pub const FLOOD_PORTS: (u16, u16) = (61000, 65535);

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

/// One flood's packets.
#[derive(Clone, Copy, Debug)]
pub struct Packets {
    pub src: Src,
    pub dst: IpAddr,
    pub sport: Port,
    pub dport: Port,
    pub transport: Transport,
}

/// How the packets are spread in time: `rate` pps while on; with `pulse`, `on` of sending
/// then `off` of silence, repeated. The rate is the one asked for, before the knob.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub rate: u64,
    pub pulse: Option<(Duration, Duration)>,
}

/// What a finished flood sent.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub packets: u64,
    /// From the first packet to the last.
    pub elapsed: Duration,
    /// The pace could not be kept (a loaded machine): time given up, in total.
    pub behind: Duration,
}

/// A running paced flood. `finish` waits for it; dropping it stops it.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<Sent, String>>>,
    what: String,
}

impl Flood {
    /// Packets sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits up to `timeout` for the flood to end (then stops it) and returns what it sent;
    /// panics if the generator failed.
    pub fn finish(mut self, timeout: Duration) -> Sent {
        let end = Instant::now() + timeout;
        while self.running() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.join()
    }

    /// Stops the flood now and returns what it sent.
    pub fn terminate(mut self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    fn join(&mut self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("flood joined once");
        match thread.join() {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => panic!("lab: flood {}: {e}", self.what),
            Err(_) => panic!("lab: flood {} panicked", self.what),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The Ethernet addresses of the attacker's veth and the victim's.
pub struct Link<'a> {
    pub netns: &'a str,
    pub ifname: &'a str,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// Starts `count` packets (before the knob) at `pace` from the attacker's veth.
pub fn start(link: &Link, packets: Packets, count: u64, pace: Pace) -> Flood {
    if let Src::Addr(a) = packets.src {
        assert_lab_addr(&a.to_string());
        assert_eq!(
            a.is_ipv4(),
            packets.dst.is_ipv4(),
            "lab: flood mixes families"
        );
    } else {
        let v4 = !matches!(packets.src, Src::Spoofed6);
        assert_eq!(v4, packets.dst.is_ipv4(), "lab: flood mixes families");
    }
    if let Src::Hosts4 { net, hosts } = packets.src {
        assert!(
            (2..=254).contains(&net) && (1..=254).contains(&hosts),
            "lab: spoofed hosts 10.250.{net}.1-{hosts} outside the spoofed range"
        );
    }
    assert_lab_addr(&packets.dst.to_string());
    assert!(pace.rate > 0, "lab: flood at 0 pps");
    let (count, rate) = (scale(count), scale(pace.rate));
    assert!(
        (1..=MAX_FLOOD_PACKETS).contains(&count),
        "lab: flood of {count} packets"
    );
    let on_secs = count as f64 / rate as f64;
    let total = match pace.pulse {
        Some((on, off)) => on_secs * (1.0 + off.as_secs_f64() / on.as_secs_f64()),
        None => on_secs,
    };
    // Bounded in time whatever happens: twice its length, plus 5 s, at most 90 s.
    let deadline = Duration::from_secs_f64((total * 2.0 + 5.0).min(90.0));
    let what = format!("{count} packets at {rate} pps {packets:?} {:?}", pace.pulse);
    let netns = format!("/var/run/netns/{}", link.netns);
    let (ifname, src_mac, dst_mac) = (link.ifname.to_string(), link.src_mac, link.dst_mac);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("lab-flood".into())
        .spawn(move || {
            let sock = match open(&netns, &ifname) {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let frames = Frames::new(packets, src_mac, dst_mac);
            run(
                &sock, frames, count, rate, pace.pulse, deadline, &stop2, &sent2,
            )
        })
        .expect("lab: spawn the flood thread");
    match rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("lab: flood {what}: {e}"),
        Err(_) => panic!("lab: flood {what}: the thread died"),
    }
    Flood {
        stop,
        sent,
        thread: Some(thread),
        what,
    }
}

/// Enters the namespace (this thread only) and opens a send-only AF_PACKET socket bound to
/// `ifname`, bypassing the qdisc as trafgen does.
fn open(netns: &str, ifname: &str) -> Result<OwnedFd, String> {
    let ns = std::fs::File::open(netns).map_err(|e| format!("open {netns}: {e}"))?;
    // SAFETY: setns on a descriptor we own; CLONE_NEWNET moves only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "setns {netns}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: prctl with an integer argument; a smaller timer slack makes the pacing sleeps
    // end on time (the default slack is 50 µs).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0u64, 0u64, 0u64) };
    // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "socket(AF_PACKET): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!("no interface {ifname} in {netns}"));
    }
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a c_int value of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // SAFETY: a zeroed sockaddr_ll is valid; the fields set are the ones bind reads.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    // SAFETY: bind with a sockaddr_ll of its own size.
    let rc = unsafe {
        libc::bind(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "bind to {ifname}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(sock)
}

/// Frames per sendmmsg call at most.
const BATCH: usize = 64;
/// The pacing step: packets due are sent every this often.
const STEP: Duration = Duration::from_micros(250);
/// A late sender catches up at most this much; the rest of the delay is given up (counted
/// in `behind`), so a stall never turns into a burst.
const CATCH_UP: Duration = Duration::from_millis(20);

#[allow(clippy::too_many_arguments)]
fn run(
    sock: &OwnedFd,
    mut frames: Frames,
    count: u64,
    rate: u64,
    pulse: Option<(Duration, Duration)>,
    deadline: Duration,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<Sent, String> {
    let begin = Instant::now();
    // `clock` runs only while the flood is on (it skips the off phases and what was given up).
    let mut behind = Duration::ZERO;
    let mut done = 0u64;
    let mut first = None;
    let mut last = begin;
    let cycle = pulse.map(|(on, off)| (on, on + off));
    while done < count && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now - begin > deadline {
            break;
        }
        let wall = now - begin;
        // Time the flood has been "on", and whether it is on now.
        let (on_time, on_now, next_on) = match cycle {
            None => (wall.saturating_sub(behind), true, None),
            Some((on, period)) => {
                let n = (wall.as_nanos() / period.as_nanos()) as u32;
                let into = wall - period * n;
                let on_time = on * n + into.min(on);
                (
                    on_time.saturating_sub(behind),
                    into < on,
                    Some(period * (n + 1)),
                )
            }
        };
        if !on_now {
            let wake = begin + next_on.unwrap();
            sleep_until(wake.min(now + Duration::from_millis(50)));
            continue;
        }
        let due = ((on_time.as_secs_f64() * rate as f64) as u64).min(count);
        let owed = due.saturating_sub(done);
        let cap = (CATCH_UP.as_secs_f64() * rate as f64).max(BATCH as f64) as u64;
        if owed > cap {
            // Late (a loaded machine): give up what is past the catch-up window.
            let lost = owed - cap;
            behind += Duration::from_secs_f64(lost as f64 / rate as f64);
            continue;
        }
        if owed == 0 {
            sleep_until(now + STEP);
            continue;
        }
        let mut left = owed;
        while left > 0 {
            let n = left.min(BATCH as u64) as usize;
            let wrote = frames.send(sock, n)?;
            if first.is_none() {
                first = Some(Instant::now());
            }
            done += wrote as u64;
            left -= wrote as u64;
            sent.store(done, Ordering::Relaxed);
            if wrote < n {
                break; // the socket's queue is full: go on at the next step
            }
        }
        last = Instant::now();
    }
    Ok(Sent {
        packets: done,
        elapsed: first.map_or(Duration::ZERO, |f| last - f),
        behind,
    })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// The frames of one flood: `BATCH` buffers rewritten for every send (random fields and
/// checksums), sent with one sendmmsg.
struct Frames {
    packets: Packets,
    bufs: Vec<Vec<u8>>,
    len: usize,
    rng: u64,
    /// When the first frame was built (`Src::Rotating4` counts its seconds from it).
    begin: Instant,
}

const ETH: usize = 14;

impl Frames {
    fn new(packets: Packets, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Frames {
        let v4 = packets.dst.is_ipv4();
        let ip = if v4 { 20 } else { 40 };
        let l4 = match packets.transport {
            Transport::Udp { payload } => 8 + payload,
            Transport::Tcp { .. } => 20,
            Transport::Fragment { payload } if v4 => payload,
            Transport::Fragment { payload } => 8 + payload,
            Transport::Raw { payload, .. } => payload,
        };
        let len = ETH + ip + l4;
        let mut frame = vec![0u8; len];
        frame[0..6].copy_from_slice(&dst_mac);
        frame[6..12].copy_from_slice(&src_mac);
        frame[12..14].copy_from_slice(if v4 { &[0x08, 0x00] } else { &[0x86, 0xdd] });
        let proto = match packets.transport {
            Transport::Udp { .. } => libc::IPPROTO_UDP as u8,
            Transport::Tcp { .. } => libc::IPPROTO_TCP as u8,
            Transport::Fragment { .. } if v4 => libc::IPPROTO_UDP as u8,
            Transport::Fragment { .. } => libc::IPPROTO_FRAGMENT as u8,
            Transport::Raw { proto, .. } => proto,
        };
        let h = &mut frame[ETH..];
        if v4 {
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((ip + l4) as u16).to_be_bytes());
            // Don't fragment; a fragment: more fragments follow (offset 0).
            h[6] = if matches!(packets.transport, Transport::Fragment { .. }) {
                0x20
            } else {
                0x40
            };
            h[8] = 64;
            h[9] = proto;
            if let IpAddr::V4(d) = packets.dst {
                h[16..20].copy_from_slice(&d.octets());
            }
        } else {
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(l4 as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            if let IpAddr::V6(d) = packets.dst {
                h[24..40].copy_from_slice(&d.octets());
            }
        }
        match packets.src {
            Src::Addr(IpAddr::V4(s)) => h[12..16].copy_from_slice(&s.octets()),
            Src::Addr(IpAddr::V6(s)) => h[8..24].copy_from_slice(&s.octets()),
            Src::Spoofed4 | Src::Rotating4 { .. } => h[12..14].copy_from_slice(&[10, 250]),
            // fd00:250::1:RRRR:RRRR; the random half is written per packet.
            Src::Spoofed6 => h[8..20].copy_from_slice(&[0xfd, 0, 2, 0x50, 0, 0, 0, 0, 0, 0, 0, 1]),
            Src::Hosts4 { net, .. } => h[12..15].copy_from_slice(&[10, 250, net]),
        }
        let t = &mut h[ip..];
        match packets.transport {
            Transport::Udp { payload } => {
                t[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
                t[8..].fill(0x41);
            }
            Transport::Tcp { flags } => {
                t[12] = 5 << 4;
                t[13] = flags;
                t[14..16].copy_from_slice(&64240u16.to_be_bytes());
            }
            Transport::Fragment { .. } if v4 => t.fill(0x41),
            Transport::Raw { .. } => t.fill(0x41),
            Transport::Fragment { .. } => {
                t[0] = libc::IPPROTO_UDP as u8;
                t[3] = 1; // offset 0, M set
                t[8..].fill(0x41);
            }
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Frames {
            packets,
            bufs: vec![frame; BATCH],
            len,
            rng: seed,
            begin: Instant::now(),
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn port(&mut self, p: Port) -> u16 {
        match p {
            Port::Fixed(p) => p,
            Port::Random(lo, hi) => lo + (self.next() % (u64::from(hi - lo) + 1)) as u16,
        }
    }

    /// Rewrites the random fields and checksums of the first `n` buffers.
    fn fill(&mut self, n: usize) {
        let p = self.packets;
        let v4 = p.dst.is_ipv4();
        let ip = if v4 { 20 } else { 40 };
        let second = self.begin.elapsed().as_secs();
        for i in 0..n {
            let sport = self.port(p.sport);
            let dport = self.port(p.dport);
            let r = self.next();
            let buf = &mut self.bufs[i];
            let h = &mut buf[ETH..];
            if v4 {
                h[4..6].copy_from_slice(&(r as u16).to_be_bytes()); // id
                match p.src {
                    Src::Spoofed4 => {
                        h[14] = 2 + ((r >> 16) % 253) as u8; // 2..=254
                        h[15] = (r >> 24) as u8;
                    }
                    Src::Hosts4 { hosts, .. } => h[15] = 1 + ((r >> 24) % u64::from(hosts)) as u8,
                    Src::Rotating4 { per_second } => {
                        let per_second = u64::from(per_second.max(1));
                        let n = second * per_second + (r >> 24) % per_second;
                        h[14] = 2 + (n % 253) as u8; // a /24 of its own, 2..=254
                        h[15] = 1 + ((n / 253) % 254) as u8;
                    }
                    Src::Spoofed6 | Src::Addr(_) => {}
                }
                h[10..12].fill(0);
                let c = fold(sum(&h[..20], 0));
                h[10..12].copy_from_slice(&c.to_be_bytes());
            } else if let Src::Spoofed6 = p.src {
                h[20..24].copy_from_slice(&(r as u32).to_be_bytes());
            }
            let (head, t) = h.split_at_mut(ip);
            let csum_at = match p.transport {
                Transport::Fragment { .. } => {
                    if !v4 {
                        t[4..8].copy_from_slice(&(r as u32).to_be_bytes()); // identification
                    }
                    continue; // no ports, no checksum: the datagram never completes
                }
                Transport::Raw { .. } => continue, // no ports, no checksum of ours
                Transport::Udp { .. } => 6,
                Transport::Tcp { flags } => {
                    t[4..8].copy_from_slice(&((r >> 32) as u32).to_be_bytes());
                    if flags & TCP_ACK != 0 {
                        t[8..12].copy_from_slice(&(r as u32).to_be_bytes());
                    }
                    16
                }
            };
            t[0..2].copy_from_slice(&sport.to_be_bytes());
            t[2..4].copy_from_slice(&dport.to_be_bytes());
            t[csum_at..csum_at + 2].fill(0);
            let l4len = t.len() as u32;
            let pseudo = if v4 {
                sum(&head[12..20], 0) + u32::from(head[9]) + l4len
            } else {
                sum(&head[8..40], 0) + u32::from(head[6]) + l4len
            };
            let mut c = fold(sum(t, pseudo));
            if c == 0 {
                c = 0xffff;
            }
            t[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        }
    }

    /// Sends `n` (≤ BATCH) fresh frames; returns how many the socket took.
    fn send(&mut self, sock: &OwnedFd, n: usize) -> Result<usize, String> {
        self.fill(n);
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iovs[i].iov_base = self.bufs[i].as_mut_ptr() as *mut libc::c_void;
            iovs[i].iov_len = self.len;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        loop {
            // SAFETY: `n` headers, each pointing at one iovec over a live buffer of `len`
            // bytes; the socket is bound, so no address is needed.
            let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => return Ok(0),
                _ => return Err(format!("sendmmsg: {e}")),
            }
        }
    }
}

fn sum(data: &[u8], init: u32) -> u32 {
    let mut s = init;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        s += u32::from(*b) << 8;
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
