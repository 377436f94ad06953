//! NFLOG over netlink: binds one nfnetlink_log group, configures copy range and batching, and
//! drains sampled packets into `PacketMeta` (and their captured bytes, for packet captures)
//! with a zero-copy walk over a buffer allocated once.
//! Loss is counted from the instance's sequence numbers (NFULA_SEQ gaps) and from ENOBUFS.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::socket::{open_netfilter, recv_into, send_to_kernel, Blocking};
use super::wire::{Msgs, Writer, NFGENMSG_LEN, NLM_F_ACK};
use super::NlError;
use crate::proto::{
    IPPROTO_AH, IPPROTO_DCCP, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_MH, IPPROTO_ROUTING, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
    IPPROTO_UDPLITE,
};

// linux/netfilter/nfnetlink.h, nfnetlink_log.h
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const MSG_PACKET: u16 = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET;
const MSG_CONFIG: u16 = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;

const NFULA_PACKET_HDR: u16 = 1;
const NFULA_TIMESTAMP: u16 = 3;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_SEQ: u16 = 12;

const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_NLBUFSIZ: u16 = 3;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULA_CFG_FLAGS: u16 = 6;

const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULNL_CFG_F_SEQ: u16 = 0x0001;

/// The kernel refuses (older kernels) or ignores (newer) instance buffers outside this range.
const NLBUFSIZ_MIN: u32 = 8 * 1024;
const NLBUFSIZ_MAX: u32 = 128 * 1024;
/// One datagram is one instance buffer (≤ 128 KiB), or one packet bigger than that (≤ 64 KiB
/// of payload plus metadata).
const RECV_BUF_MIN: usize = 256 * 1024;
/// How long `open` waits for each ACK; the kernel answers within the send call.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// nfgenmsg families and ETH_P_* values that tell IPv4 from IPv6.
pub(crate) const FAMILY_V4: u8 = libc::AF_INET as u8;
pub(crate) const FAMILY_V6: u8 = libc::AF_INET6 as u8;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// IPv6 extension headers followed before giving up.
const MAX_EXT_HEADERS: usize = 8;

/// How the NFLOG instance is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NflogConfig {
    /// Bytes of each packet copied (from the IP header). A rule's `snaplen` lowers it further.
    pub(crate) snaplen: u32,
    /// Packets batched into one datagram (a rule's `queue-threshold` overrides it).
    pub(crate) qthresh: u32,
    /// Longest a partial batch waits, in 1/100 s.
    pub(crate) flush_timeout_cs: u32,
    /// Kernel-side batch buffer, clamped to 8–128 KiB (the kernel ACKs values outside that
    /// range but ignores them).
    pub(crate) nlbufsiz: u32,
    /// Socket receive buffer (SO_RCVBUFFORCE, else SO_RCVBUF capped by rmem_max).
    pub(crate) rcvbuf: usize,
}

impl Default for NflogConfig {
    fn default() -> NflogConfig {
        NflogConfig {
            snaplen: 128,
            qthresh: 16,
            flush_timeout_cs: 10,
            nlbufsiz: 128 * 1024,
            rcvbuf: 4 * 1024 * 1024,
        }
    }
}

/// A sampled packet as captured: its first bytes (from the IP header, at most the snaplen)
/// and when the kernel logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Captured<'a> {
    pub(crate) l3: &'a [u8],
    /// Since the Unix epoch (NFULA_TIMESTAMP: the kernel stamps packets logged in prerouting,
    /// input and forward); None when the message has none.
    pub(crate) timestamp: Option<Duration>,
}

/// What one `drain` (or the socket's life, for `totals`) saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DrainStats {
    /// Packets parsed and passed on.
    pub(crate) packets: u64,
    /// Packets the kernel logged that never reached us (gaps in NFULA_SEQ).
    pub(crate) lost: u64,
    /// Times recv reported ENOBUFS: the kernel dropped batches for a full receive queue.
    pub(crate) enobufs: u64,
    /// Messages skipped: short, lying lengths, or a payload that is not IPv4/IPv6.
    pub(crate) malformed: u64,
}

impl DrainStats {
    fn add(&mut self, other: &DrainStats) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.lost = self.lost.wrapping_add(other.lost);
        self.enobufs = self.enobufs.wrapping_add(other.enobufs);
        self.malformed = self.malformed.wrapping_add(other.malformed);
    }
}

/// Tracks the instance sequence number: every NFULA_SEQ should be one more than the last.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SeqTracker {
    /// The sequence number expected next; None until the first packet sets the baseline.
    next: Option<u32>,
}

impl SeqTracker {
    /// For an instance we just created: its numbering starts at 0, so packets dropped before
    /// our first read count as lost too.
    pub(crate) fn fresh() -> SeqTracker {
        SeqTracker { next: Some(0) }
    }

    /// Notes `seq` and returns how many packets were skipped before it. Wraps around at 2^32;
    /// a jump backwards (instance re-created) restarts the count without loss.
    fn observe(&mut self, seq: u32) -> u64 {
        let lost = match self.next {
            Some(next) => {
                let gap = seq.wrapping_sub(next);
                if gap < 1 << 31 {
                    u64::from(gap)
                } else {
                    0
                }
            }
            None => 0,
        };
        self.next = Some(seq.wrapping_add(1));
        lost
    }
}

/// One NETLINK_NETFILTER socket bound to one NFLOG group, with its receive buffer.
pub(crate) struct NflogSocket {
    fd: OwnedFd,
    buf: Box<[u8]>,
    group: u16,
    seqs: SeqTracker,
    totals: DrainStats,
}

impl std::fmt::Debug for NflogSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NflogSocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("group", &self.group)
            .field("totals", &self.totals)
            .finish()
    }
}

impl NflogSocket {
    /// Opens a non-blocking socket and binds NFLOG group `group` in this network namespace
    /// (EPERM when another socket, e.g. ulogd's, holds it). The instance — and its group —
    /// is released when the socket closes.
    ///
    /// No PF_BIND/PF_UNBIND is sent: `log group N` finds the nfnetlink_log backend by itself,
    /// and on current kernels those commands still rewrite the namespace's default logger
    /// (`/proc/sys/net/netfilter/nf_log/<pf>`), which is not ours to change.
    pub(crate) fn open(group: u16, cfg: &NflogConfig) -> Result<NflogSocket, NlError> {
        let (fd, _) = open_netfilter("open NFLOG socket", cfg.rcvbuf, Blocking::No)?;
        let nlbufsiz = cfg.nlbufsiz.clamp(NLBUFSIZ_MIN, NLBUFSIZ_MAX);
        let buf_len = RECV_BUF_MIN.max(nlbufsiz as usize + 64 * 1024);
        let mut sock = NflogSocket {
            fd,
            buf: vec![0; buf_len].into_boxed_slice(),
            group,
            seqs: SeqTracker::fresh(),
            totals: DrainStats::default(),
        };
        // struct nfulnl_msg_config_mode (packed): copy range, big-endian, then the mode.
        let mut mode = [0u8; 6];
        mode[..4].copy_from_slice(&cfg.snaplen.to_be_bytes());
        mode[4] = NFULNL_COPY_PACKET;
        let qthresh = cfg.qthresh.to_be_bytes();
        let timeout = cfg.flush_timeout_cs.to_be_bytes();
        let bufsiz = nlbufsiz.to_be_bytes();
        // NFULA_CFG_FLAGS must be 2 bytes: a 4-byte value is ACKed but read as 0 (no SEQ).
        let flags = NFULNL_CFG_F_SEQ.to_be_bytes();
        let steps: [(&str, u16, &[u8]); 6] = [
            ("bind", NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]),
            ("set copy mode of", NFULA_CFG_MODE, &mode),
            ("set queue threshold of", NFULA_CFG_QTHRESH, &qthresh),
            ("set flush timeout of", NFULA_CFG_TIMEOUT, &timeout),
            ("set buffer size of", NFULA_CFG_NLBUFSIZ, &bufsiz),
            ("set sequence numbers on", NFULA_CFG_FLAGS, &flags),
        ];
        let mut request = Writer::new();
        for (seq, (what, attr, payload)) in (1u32..).zip(steps) {
            request.clear();
            request.begin(MSG_CONFIG, NLM_F_ACK, seq, libc::AF_UNSPEC as u8, group);
            request.attr(attr, payload);
            request.end();
            sock.configure(request.bytes(), seq, what)?;
        }
        Ok(sock)
    }

    /// The descriptor, for registration with mio (`SourceFd`, edge-triggered: call `drain`
    /// until it has read everything, which it always does).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Everything counted since `open`.
    pub(crate) fn totals(&self) -> DrainStats {
        self.totals
    }

    /// Reads until the socket is empty, passing each sampled packet to `on_packet`. ENOBUFS
    /// (the kernel dropped batches) is counted and reading goes on. Allocates nothing.
    pub(crate) fn drain(
        &mut self,
        on_packet: &mut dyn FnMut(&PacketMeta, &Captured),
    ) -> DrainStats {
        let mut stats = DrainStats::default();
        loop {
            // MSG_TRUNC makes netlink return the datagram's real length, so a cut datagram is
            // noticed.
            let rc = match recv_into(
                &self.fd,
                &mut self.buf,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            ) {
                Ok(n) => n,
                Err(err) => match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        stats.enobufs += 1;
                        continue;
                    }
                    Some(libc::EAGAIN) => break,
                    _ => {
                        log::warn!("NFLOG group {}: recv failed: {err}", self.group);
                        break;
                    }
                },
            };
            let len = rc.min(self.buf.len());
            // A datagram longer than the buffer ends in a cut message: counted as malformed.
            walk(&self.buf[..len], &mut self.seqs, &mut stats, on_packet);
        }
        self.totals.add(&stats);
        stats
    }

    /// Sends one config message and waits for its ACK. Packets that arrive meanwhile (after
    /// the bind) are dropped, but their sequence numbers are noted so they are not counted
    /// as lost.
    fn configure(&mut self, request: &[u8], seq: u32, what: &str) -> Result<(), NlError> {
        let group = self.group;
        send_to_kernel(&self.fd, request, "send NFLOG config")?;
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let rc = match recv_into(&self.fd, &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(err) => match err.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::ENOBUFS) => continue,
                    Some(libc::EAGAIN) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(NlError::Io {
                                op: "wait for NFLOG config ACK",
                                source: io::ErrorKind::TimedOut.into(),
                            });
                        }
                        wait_readable(self.fd.as_raw_fd(), left);
                        continue;
                    }
                    _ => {
                        return Err(NlError::Io {
                            op: "read NFLOG config ACK",
                            source: err,
                        })
                    }
                },
            };
            let len = rc.min(self.buf.len());
            for msg in Msgs::new(&self.buf[..len]).flatten() {
                if msg.kind() == MSG_PACKET {
                    if let Some(s) = msg.nf_attrs().get(NFULA_SEQ).and_then(|a| a.be32()) {
                        self.seqs.observe(s);
                    }
                    continue;
                }
                let Some(reply) = msg.error() else { continue };
                if reply.seq != seq {
                    continue;
                }
                if reply.code == 0 {
                    return Ok(());
                }
                let errno = reply.code.saturating_neg();
                let hint = match errno {
                    libc::EPERM => Some(
                        "another socket (ulogd? another ftagent?) holds this group, \
                         or CAP_NET_ADMIN is missing",
                    ),
                    _ => reply.ext_msg,
                };
                let what = format!("{what} NFLOG group {group}");
                return Err(NlError::kernel(what, errno, hint));
            }
        }
    }
}

/// Waits until `fd` is readable or `timeout` passes.
fn wait_readable(fd: RawFd, timeout: Duration) {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    crate::sys::poll_readable(fd, ms.max(1));
}

/// Walks one received datagram: each NFULNL packet message is checked, its sequence number
/// noted and its payload parsed. Other messages (NLMSG_DONE closing a batch) are skipped.
pub(crate) fn walk(
    datagram: &[u8],
    seqs: &mut SeqTracker,
    stats: &mut DrainStats,
    on_packet: &mut dyn FnMut(&PacketMeta, &Captured),
) {
    for msg in Msgs::new(datagram) {
        let Ok(msg) = msg else {
            stats.malformed += 1;
            break;
        };
        if msg.kind() != MSG_PACKET {
            continue;
        }
        if msg.payload().len() < NFGENMSG_LEN {
            stats.malformed += 1;
            continue;
        }
        let family = msg.nfgen_family().unwrap_or(0);
        let mut hw_protocol = None;
        let mut payload = None;
        let mut timestamp = None;
        for attr in msg.nf_attrs() {
            match attr.kind() {
                NFULA_PACKET_HDR => {
                    hw_protocol = attr
                        .bytes()
                        .get(..2)
                        .map(|b| u16::from_be_bytes([b[0], b[1]]))
                }
                NFULA_PAYLOAD => payload = Some(attr.bytes()),
                NFULA_TIMESTAMP => timestamp = parse_timestamp(attr.bytes()),
                NFULA_SEQ => {
                    if let Some(seq) = attr.be32() {
                        stats.lost += seqs.observe(seq);
                    }
                }
                _ => {}
            }
        }
        let hint = match hw_protocol {
            Some(ETH_P_IP) => FAMILY_V4,
            Some(ETH_P_IPV6) => FAMILY_V6,
            _ => family,
        };
        match payload.and_then(|p| Some((parse_packet(p, hint)?, p))) {
            Some((meta, l3)) => {
                stats.packets += 1;
                on_packet(&meta, &Captured { l3, timestamp });
            }
            None => stats.malformed += 1,
        }
    }
}

/// struct nfulnl_msg_packet_timestamp: seconds and microseconds, big-endian 64-bit each.
fn parse_timestamp(bytes: &[u8]) -> Option<Duration> {
    let sec = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let usec = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    (usec < 1_000_000).then(|| Duration::new(sec, usec as u32 * 1000))
}

/// What we keep of one sampled packet (parsed from its headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacketMeta {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    /// IPPROTO_* of the transport, after IPv6 extension headers (or the last header reached
    /// when the capture ends inside them).
    pub(crate) proto: u8,
    pub(crate) src_port: Option<u16>,
    /// For TCP/UDP/SCTP/DCCP the port; for ICMP and ICMPv6 `type << 8 | code` (the NetFlow
    /// convention), so ICMP floods show up in the port table by type.
    pub(crate) dst_port: Option<u16>,
    /// IP total length (IPv6: 40 + payload length).
    pub(crate) len: u16,
    /// TTL or hop limit.
    pub(crate) ttl: u8,
    pub(crate) tcp_flags: Option<u8>,
    /// An IPv4 fragment (MF set or offset > 0) or an IPv6 packet with a fragment header.
    pub(crate) fragment: bool,
}

/// Parses the captured start of an IPv4 or IPv6 packet: addresses and lengths from the IP
/// header, then (IPv6 extension headers skipped) ports, TCP flags or ICMP type/code when the
/// capture reaches them. `family_hint` is FAMILY_V4 or FAMILY_V6 to insist on a version,
/// anything else to go by the version nibble. None when the IP header is short or lies.
pub(crate) fn parse_packet(l3: &[u8], family_hint: u8) -> Option<PacketMeta> {
    let version = l3.first()? >> 4;
    let wanted = match family_hint {
        FAMILY_V4 => 4,
        FAMILY_V6 => 6,
        _ => version,
    };
    if version != wanted {
        return None;
    }
    match version {
        4 => parse_v4(Ipv4Header::new_checked(l3)?),
        6 => Some(parse_v6(Ipv6Header::new_checked(l3)?)),
        _ => None,
    }
}

fn parse_v4(ip: Ipv4Header) -> Option<PacketMeta> {
    let fragment = ip.more_fragments() || ip.fragment_offset() != 0;
    let mut meta = PacketMeta {
        src: IpAddr::V4(ip.src()),
        dst: IpAddr::V4(ip.dst()),
        proto: ip.protocol(),
        src_port: None,
        dst_port: None,
        len: ip.total_len(),
        ttl: ip.ttl(),
        tcp_flags: None,
        fragment,
    };
    if ip.fragment_offset() == 0 {
        read_transport(&mut meta, IPPROTO_ICMP, ip.payload());
    }
    Some(meta)
}

fn parse_v6(ip: Ipv6Header) -> PacketMeta {
    let chain = follow_ext_headers(ip.next_header(), ip.payload());
    let mut meta = PacketMeta {
        src: IpAddr::V6(ip.src()),
        dst: IpAddr::V6(ip.dst()),
        proto: chain.proto,
        src_port: None,
        dst_port: None,
        len: ip.total_len(),
        ttl: ip.hop_limit(),
        tcp_flags: None,
        fragment: chain.fragment,
    };
    if let Some(l4) = chain.transport {
        read_transport(&mut meta, IPPROTO_ICMPV6, l4);
    }
    meta
}

/// Fills ports, TCP flags or ICMP type/code from the captured transport bytes.
fn read_transport(meta: &mut PacketMeta, icmp: u8, l4: &[u8]) {
    match meta.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP | IPPROTO_DCCP => {
            if let Some(p) = l4.get(..4) {
                meta.src_port = Some(u16::from_be_bytes([p[0], p[1]]));
                meta.dst_port = Some(u16::from_be_bytes([p[2], p[3]]));
            }
            if meta.proto == IPPROTO_TCP {
                meta.tcp_flags = l4.get(13).copied();
            }
        }
        p if p == icmp => {
            if let Some(t) = l4.get(..2) {
                meta.dst_port = Some(u16::from_be_bytes([t[0], t[1]]));
            }
        }
        _ => {}
    }
}

/// A checked view of an IPv4 header: the fixed 20 bytes are present, IHL ≥ 5 and the total
/// length covers the header (0 is taken as unknown: BIG TCP / GSO).
#[derive(Debug, Clone, Copy)]
struct Ipv4Header<'a> {
    bytes: &'a [u8],
    header_len: usize,
}

impl<'a> Ipv4Header<'a> {
    const MIN_LEN: usize = 20;

    fn new_checked(bytes: &'a [u8]) -> Option<Ipv4Header<'a>> {
        let fixed = bytes.get(..Self::MIN_LEN)?;
        if fixed[0] >> 4 != 4 {
            return None;
        }
        let header_len = usize::from(fixed[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if header_len < Self::MIN_LEN || (total != 0 && total < header_len) {
            return None;
        }
        Some(Ipv4Header { bytes, header_len })
    }

    fn total_len(&self) -> u16 {
        match u16::from_be_bytes([self.bytes[2], self.bytes[3]]) {
            0 => u16::MAX,
            n => n,
        }
    }

    fn more_fragments(&self) -> bool {
        self.bytes[6] & 0x20 != 0
    }

    fn fragment_offset(&self) -> u16 {
        u16::from_be_bytes([self.bytes[6], self.bytes[7]]) & 0x1fff
    }

    fn ttl(&self) -> u8 {
        self.bytes[8]
    }

    fn protocol(&self) -> u8 {
        self.bytes[9]
    }

    fn src(&self) -> Ipv4Addr {
        let b = self.bytes;
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    fn dst(&self) -> Ipv4Addr {
        let b = self.bytes;
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// The captured bytes after the header (options included in the header), up to the total
    /// length: empty or short when the snaplen cut them.
    fn payload(&self) -> &'a [u8] {
        let end = match u16::from_be_bytes([self.bytes[2], self.bytes[3]]) {
            0 => self.bytes.len(),
            n => self.bytes.len().min(usize::from(n)),
        };
        self.bytes.get(self.header_len..end).unwrap_or(&[])
    }
}

/// A checked view of an IPv6 header: the fixed 40 bytes are present.
#[derive(Debug, Clone, Copy)]
struct Ipv6Header<'a> {
    bytes: &'a [u8],
}

impl<'a> Ipv6Header<'a> {
    const LEN: usize = 40;

    fn new_checked(bytes: &'a [u8]) -> Option<Ipv6Header<'a>> {
        let fixed = bytes.get(..Self::LEN)?;
        if fixed[0] >> 4 != 6 {
            return None;
        }
        Some(Ipv6Header { bytes })
    }

    fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.bytes[4], self.bytes[5]])
    }

    /// 40 + payload length, saturating; a zero payload length with more bytes captured is a
    /// jumbogram (or BIG TCP) and reads as 65535.
    fn total_len(&self) -> u16 {
        match self.payload_len() {
            0 if self.bytes.len() > Self::LEN => u16::MAX,
            n => n.saturating_add(Self::LEN as u16),
        }
    }

    fn next_header(&self) -> u8 {
        self.bytes[6]
    }

    fn hop_limit(&self) -> u8 {
        self.bytes[7]
    }

    fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.bytes[8..24]);
        Ipv6Addr::from(a)
    }

    fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.bytes[24..40]);
        Ipv6Addr::from(a)
    }

    fn payload(&self) -> &'a [u8] {
        let end = match self.payload_len() {
            0 => self.bytes.len(),
            n => self.bytes.len().min(Self::LEN + usize::from(n)),
        };
        self.bytes.get(Self::LEN..end).unwrap_or(&[])
    }
}

/// Where an IPv6 extension-header chain led.
struct Chain<'a> {
    /// The transport protocol, or the last next-header value reached.
    proto: u8,
    /// The transport header's captured bytes; None when the chain could not be followed to it
    /// (cut by the snaplen, too long, or a non-first fragment).
    transport: Option<&'a [u8]>,
    fragment: bool,
}

fn follow_ext_headers(first: u8, mut rest: &[u8]) -> Chain<'_> {
    let mut next = first;
    let mut fragment = false;
    for _ in 0..MAX_EXT_HEADERS {
        let header_len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH => {
                rest.get(1).map(|&l| (usize::from(l) + 1) * 8)
            }
            IPPROTO_AH => rest.get(1).map(|&l| (usize::from(l) + 2) * 4),
            IPPROTO_FRAGMENT => {
                fragment = true;
                match rest.get(..8) {
                    Some(h) if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 => {
                        // A non-first fragment: its transport header is in fragment 0.
                        return Chain {
                            proto: h[0],
                            transport: None,
                            fragment,
                        };
                    }
                    Some(_) => Some(8),
                    None => None,
                }
            }
            _ => {
                return Chain {
                    proto: next,
                    transport: Some(rest),
                    fragment,
                }
            }
        };
        let (Some(len), Some(&following)) = (header_len, rest.first()) else {
            break; // cut inside the header
        };
        next = following;
        match rest.get(len..) {
            Some(after) => rest = after,
            None => break,
        }
    }
    Chain {
        proto: next,
        transport: None,
        fragment,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::wire::{NLMSG_DONE, NLM_F_MULTI};
    use super::*;
    use crate::netlink::testns::{is_root, Netns};

    const SRC4: [u8; 4] = [192, 0, 2, 7];
    const DST4: [u8; 4] = [198, 51, 100, 1];
    const SRC6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42,
    ];

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t
    }

    fn udp(sport: u16, dport: u16, body: usize) -> Vec<u8> {
        let mut u = vec![0u8; 8 + body];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + body) as u16).to_be_bytes());
        u
    }

    /// IPv4 header (with `options` bytes of options) + payload; `frag` is the flags/offset
    /// field.
    fn ipv4(proto: u8, frag: u16, options: usize, payload: &[u8]) -> Vec<u8> {
        let hl = 20 + options;
        let mut p = vec![0u8; hl];
        p[0] = 0x40 | (hl / 4) as u8;
        p[2..4].copy_from_slice(&((hl + payload.len()) as u16).to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&SRC4);
        p[16..20].copy_from_slice(&DST4);
        p.extend_from_slice(payload);
        p
    }

    /// IPv6 header + extension headers (each given as (type, bytes incl. its own next-header
    /// byte, which is patched)) + payload.
    fn ipv6(exts: &[(u8, Vec<u8>)], proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (_, bytes)) in exts.iter().enumerate() {
            let mut b = bytes.clone();
            b[0] = exts.get(i + 1).map(|e| e.0).unwrap_or(proto);
            body.extend_from_slice(&b);
        }
        body.extend_from_slice(payload);
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
        p[6] = exts.first().map(|e| e.0).unwrap_or(proto);
        p[7] = 255;
        p[8..24].copy_from_slice(&SRC6);
        p[39] = 1;
        p.extend_from_slice(&body);
        p
    }

    fn ext(len8: usize) -> Vec<u8> {
        let mut e = vec![0u8; len8 * 8];
        e[1] = (len8 - 1) as u8;
        e
    }

    fn frag_header(offset: u16, more: bool) -> Vec<u8> {
        let mut f = vec![0u8; 8];
        f[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
        f
    }

    #[test]
    fn ipv4_tcp_udp_icmp() {
        let p = ipv4(6, 0x4000, 0, &tcp(40000, 443, 0x02));
        let m = parse_packet(&p, FAMILY_V4).unwrap();
        assert_eq!(
            m,
            PacketMeta {
                src: IpAddr::V4(SRC4.into()),
                dst: IpAddr::V4(DST4.into()),
                proto: 6,
                src_port: Some(40000),
                dst_port: Some(443),
                len: 40,
                ttl: 64,
                tcp_flags: Some(0x02),
                fragment: false,
            }
        );
        // Options are skipped.
        let m = parse_packet(&ipv4(17, 0, 8, &udp(53, 9999, 100)), 0).unwrap();
        assert_eq!((m.src_port, m.dst_port, m.len), (Some(53), Some(9999), 136));
        let m = parse_packet(&ipv4(1, 0, 0, &[8, 0, 0, 0, 0, 1, 0, 1]), 0).unwrap();
        assert_eq!((m.proto, m.src_port, m.dst_port), (1, None, Some(0x0800)));
        // Version and hint must agree.
        assert_eq!(parse_packet(&p, FAMILY_V6), None);
    }

    #[test]
    fn ipv4_fragments() {
        let first = parse_packet(&ipv4(17, 0x2000, 0, &udp(1, 2, 40)), 0).unwrap();
        assert!(first.fragment);
        assert_eq!(first.dst_port, Some(2));
        // Later fragments carry no transport header: no ports even if bytes follow.
        let later = parse_packet(&ipv4(17, 185, 0, &udp(1, 2, 40)), 0).unwrap();
        assert!(later.fragment);
        assert_eq!((later.src_port, later.dst_port), (None, None));
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let plain = parse_packet(&ipv6(&[], 6, &tcp(5, 22, 0x12)), FAMILY_V6).unwrap();
        assert_eq!(plain.src, IpAddr::V6(SRC6.into()));
        assert_eq!(
            (plain.proto, plain.dst_port, plain.tcp_flags),
            (6, Some(22), Some(0x12))
        );
        assert_eq!((plain.len, plain.ttl, plain.fragment), (60, 255, false));

        let exts = [(0, ext(1)), (43, ext(3)), (60, ext(2))];
        let m = parse_packet(&ipv6(&exts, 17, &udp(7, 8, 0)), 0).unwrap();
        assert_eq!((m.proto, m.src_port, m.dst_port), (17, Some(7), Some(8)));

        let first = [(0, ext(1)), (44, frag_header(0, true))];
        let m = parse_packet(&ipv6(&first, 17, &udp(7, 8, 0)), 0).unwrap();
        assert!(m.fragment);
        assert_eq!((m.proto, m.dst_port), (17, Some(8)));
        let later = [(44, frag_header(100, false))];
        let m = parse_packet(&ipv6(&later, 17, &udp(7, 8, 0)), 0).unwrap();
        assert!(m.fragment);
        assert_eq!((m.proto, m.dst_port), (17, None));

        let m = parse_packet(&ipv6(&[], 58, &[128, 0, 0, 0]), 0).unwrap();
        assert_eq!((m.proto, m.dst_port), (58, Some(0x8000)));
        // Too many extension headers: stop, no ports.
        let many: Vec<(u8, Vec<u8>)> = (0..12).map(|_| (60, ext(1))).collect();
        let m = parse_packet(&ipv6(&many, 17, &udp(7, 8, 0)), 0).unwrap();
        assert_eq!((m.proto, m.dst_port), (60, None));
    }

    #[test]
    fn truncated_at_every_length() {
        let packets = [
            ipv4(6, 0, 4, &tcp(1000, 80, 0x18)),
            ipv4(17, 0, 0, &udp(1000, 53, 20)),
            ipv6(
                &[(0, ext(2)), (44, frag_header(0, true))],
                6,
                &tcp(1000, 80, 0x02),
            ),
            ipv6(&[], 17, &udp(1000, 53, 0)),
        ];
        for p in &packets {
            let whole = parse_packet(p, 0).unwrap();
            for cut in 0..p.len() {
                let Some(m) = parse_packet(&p[..cut], 0) else {
                    assert!(cut < if p[0] >> 4 == 4 { 20 } else { 40 });
                    continue;
                };
                // Whatever is reported agrees with the whole packet; ports all or nothing.
                assert_eq!((m.src, m.len, m.ttl), (whole.src, whole.len, whole.ttl));
                assert_eq!(m.src_port.is_some(), m.dst_port.is_some());
                if m.dst_port.is_some() {
                    assert_eq!((m.proto, m.dst_port), (whole.proto, whole.dst_port));
                }
                if let Some(f) = m.tcp_flags {
                    assert_eq!(Some(f), whole.tcp_flags);
                }
            }
        }
    }

    #[test]
    fn lying_ip_headers() {
        let mut p = ipv4(6, 0, 0, &tcp(1, 2, 0));
        p[0] = 0x44; // IHL 4 < 5
        assert_eq!(parse_packet(&p, 0), None);
        let mut p = ipv4(6, 0, 0, &tcp(1, 2, 0));
        p[0] = 0x4f; // 60-byte header in a 40-byte capture: no transport
        let m = parse_packet(&p, 0);
        assert_eq!(m, None, "total length 40 < header 60");
        let mut p = ipv4(17, 0, 0, &udp(1, 2, 0));
        p[2..4].copy_from_slice(&22u16.to_be_bytes()); // total length cuts the UDP header
        assert_eq!(parse_packet(&p, 0).unwrap().dst_port, None);
        assert_eq!(parse_packet(&[0x50; 60], 0), None);
        assert_eq!(parse_packet(&[], FAMILY_V4), None);
    }

    /// An NFULNL packet message as the kernel sends it.
    pub(crate) fn nflog_msg(w: &mut Writer, family: u8, hw: u16, seq: Option<u32>, payload: &[u8]) {
        w.begin(MSG_PACKET, 0, 0, family, 5);
        w.attr(NFULA_PACKET_HDR, &[(hw >> 8) as u8, hw as u8, 3, 0]);
        w.attr(2, &7u32.to_be_bytes()); // NFULA_MARK: ignored
        if let Some(s) = seq {
            w.attr_be32(NFULA_SEQ, s);
        }
        w.attr(NFULA_PAYLOAD, payload);
        w.end();
    }

    fn done(w: &mut Writer) {
        w.begin(NLMSG_DONE, NLM_F_MULTI, 0, 0, 0);
        w.end();
    }

    fn walk_all(datagrams: &[Vec<u8>], seqs: &mut SeqTracker) -> (DrainStats, Vec<PacketMeta>) {
        let mut stats = DrainStats::default();
        let mut seen = Vec::new();
        for d in datagrams {
            walk(d, seqs, &mut stats, &mut |m, _| seen.push(*m));
        }
        (stats, seen)
    }

    #[test]
    fn walker_reads_batches_and_counts_gaps() {
        let v4 = ipv4(17, 0, 0, &udp(1234, 9, 10));
        let v6 = ipv6(&[], 6, &tcp(1234, 443, 0x02));
        let mut w = Writer::new();
        for s in [0, 1, 2] {
            nflog_msg(&mut w, FAMILY_V4, ETH_P_IP, Some(s), &v4);
        }
        nflog_msg(&mut w, FAMILY_V6, ETH_P_IPV6, Some(5), &v6); // 3, 4 lost
        done(&mut w);
        let first = w.bytes().to_vec();
        w.clear();
        nflog_msg(&mut w, FAMILY_V4, ETH_P_IP, Some(6), &v4);
        nflog_msg(&mut w, 0, 0, Some(10), &v6); // no hints: by version nibble; 7–9 lost
        let second = w.bytes().to_vec();
        let (stats, seen) = walk_all(&[first, second], &mut SeqTracker::fresh());
        assert_eq!(
            stats,
            DrainStats {
                packets: 6,
                lost: 5,
                enobufs: 0,
                malformed: 0
            }
        );
        assert_eq!(seen[3].dst_port, Some(443));
        assert_eq!(seen[0].dst_port, Some(9));
    }

    /// Issue 9: the walker hands on the captured bytes and the kernel's timestamp, for packet
    /// captures; a timestamp with an impossible microsecond count is ignored.
    #[test]
    fn walker_passes_captured_bytes_and_timestamps() {
        let v4 = ipv4(17, 0, 0, &udp(1234, 9, 10));
        let mut w = Writer::new();
        for usec in [250_000u64, 1_000_000] {
            w.begin(MSG_PACKET, 0, 0, FAMILY_V4, 5);
            w.attr(NFULA_PACKET_HDR, &[0x08, 0x00, 3, 0]);
            let mut ts = 1_800_000_000u64.to_be_bytes().to_vec();
            ts.extend_from_slice(&usec.to_be_bytes());
            w.attr(NFULA_TIMESTAMP, &ts);
            w.attr(NFULA_PAYLOAD, &v4);
            w.end();
        }
        nflog_msg(&mut w, FAMILY_V4, ETH_P_IP, None, &v4[..24]);
        let mut seen = Vec::new();
        let mut stats = DrainStats::default();
        walk(
            w.bytes(),
            &mut SeqTracker::default(),
            &mut stats,
            &mut |_, c| seen.push((c.l3.to_vec(), c.timestamp)),
        );
        assert_eq!(stats.packets, 3);
        assert_eq!(
            seen[0],
            (v4.clone(), Some(Duration::new(1_800_000_000, 250_000_000)))
        );
        assert_eq!(seen[1], (v4.clone(), None));
        assert_eq!(seen[2], (v4[..24].to_vec(), None));
    }

    #[test]
    fn sequence_first_packet_and_wrap_around() {
        // Fresh instance: numbering starts at 0, so a first seq of 3 means 3 lost.
        let mut fresh = SeqTracker::fresh();
        assert_eq!(fresh.observe(3), 3);
        // Unknown baseline: the first packet only sets it.
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(u32::MAX - 1), 0);
        assert_eq!(t.observe(u32::MAX), 0);
        assert_eq!(t.observe(0), 0);
        assert_eq!(t.observe(3), 2);
        // Across the wrap with a gap.
        let mut t = SeqTracker::default();
        t.observe(u32::MAX - 2);
        assert_eq!(t.observe(1), 3); // MAX-1, MAX, 0
                                     // Backwards (instance re-created): no loss, new baseline.
        assert_eq!(t.observe(0), 0);
        assert_eq!(t.observe(1), 0);
        // Packets without NFULA_SEQ leave it alone.
        let mut w = Writer::new();
        nflog_msg(
            &mut w,
            FAMILY_V4,
            ETH_P_IP,
            None,
            &ipv4(17, 0, 0, &udp(1, 2, 0)),
        );
        let (stats, _) = walk_all(&[w.bytes().to_vec()], &mut t);
        assert_eq!((stats.packets, stats.lost), (1, 0));
        assert_eq!(t.next, Some(2));
    }

    #[test]
    fn walker_skips_malformed() {
        let good = ipv4(17, 0, 0, &udp(1, 2, 0));
        let mut w = Writer::new();
        nflog_msg(&mut w, FAMILY_V4, ETH_P_IP, Some(0), &[0x45, 0, 0]); // short payload
        nflog_msg(&mut w, FAMILY_V4, ETH_P_IP, Some(1), &good);
        nflog_msg(&mut w, FAMILY_V4, ETH_P_IPV6, Some(2), &good); // hint says v6
        w.begin(MSG_PACKET, 0, 0, FAMILY_V4, 5); // no payload attribute
        w.end();
        let mut bytes = w.bytes().to_vec();
        // A message header with a lying length at the end.
        bytes.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let (stats, seen) = walk_all(&[bytes], &mut SeqTracker::fresh());
        assert_eq!((stats.packets, stats.malformed, stats.lost), (1, 4, 0));
        assert_eq!(seen[0].dst_port, Some(2));
        // A message shorter than nfgenmsg.
        let mut short = vec![0u8; 18];
        short[0] = 18;
        short[4..6].copy_from_slice(&MSG_PACKET.to_ne_bytes());
        let (stats, _) = walk_all(&[short], &mut SeqTracker::fresh());
        assert_eq!(stats.malformed, 1);
    }

    /// xorshift64*: deterministic randomness without crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut w = Writer::new();
        nflog_msg(
            &mut w,
            FAMILY_V4,
            ETH_P_IP,
            Some(0),
            &ipv4(6, 0, 4, &tcp(1, 2, 3)),
        );
        let exts = [(0, ext(1)), (44, frag_header(0, true)), (51, vec![0u8; 12])];
        nflog_msg(
            &mut w,
            FAMILY_V6,
            ETH_P_IPV6,
            Some(1),
            &ipv6(&exts, 17, &udp(1, 2, 3)),
        );
        done(&mut w);
        let seed = w.bytes().to_vec();
        let mut buf = vec![0u8; 512];
        let mut seqs = SeqTracker::fresh();
        let mut stats = DrainStats::default();
        let mut count = 0u64;
        for round in 0..100_000 {
            let len = if round % 2 == 0 {
                // Mutate a few bytes of a valid datagram and cut it somewhere.
                buf[..seed.len()].copy_from_slice(&seed);
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % seed.len();
                    buf[i] = rng.next() as u8;
                }
                (rng.next() as usize) % (seed.len() + 1)
            } else {
                let len = (rng.next() as usize) % buf.len();
                for b in &mut buf[..len] {
                    *b = rng.next() as u8;
                }
                // Make random bytes look like IP now and then.
                if len > 0 && rng.next() % 2 == 0 {
                    buf[0] = if rng.next() % 2 == 0 { 0x45 } else { 0x60 };
                }
                len
            };
            walk(&buf[..len], &mut seqs, &mut stats, &mut |_, _| count += 1);
            let _ = parse_packet(&buf[..len], (rng.next() % 12) as u8);
            let _ = parse_packet(buf.get(36..len).unwrap_or(&[]), 0);
        }
        assert_eq!(stats.packets, count);
        assert!(stats.packets > 1000 && stats.malformed > 1000, "{stats:?}");
    }

    /// Drains until `want` packets came or `timeout` passed.
    fn collect(sock: &mut NflogSocket, want: u64, timeout: Duration) -> Vec<PacketMeta> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + timeout;
        while (seen.len() as u64) < want && Instant::now() < deadline {
            wait_readable(sock.raw_fd(), Duration::from_millis(50));
            sock.drain(&mut |m, _| seen.push(*m));
        }
        seen
    }

    #[test]
    fn root_logs_udp_in_own_namespace() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, nft, NFLOG)");
            return;
        }
        let ns = Netns::create("nflog").expect("a network namespace");
        let rules = "add table inet fta_nflog_test
            add chain inet fta_nflog_test out { type filter hook output priority 0; }
            add rule inet fta_nflog_test out udp dport 9 log group 17
            add rule inet fta_nflog_test out udp dport 10 log group 18
            add rule inet fta_nflog_test out udp dport 10 counter";
        ns.exec(&["nft", rules]).expect("nft rules");
        let result = ns.run(move || {
            // 1. Normal operation: 200 IPv4 and 50 IPv6 datagrams to the discard port.
            let mut sock = NflogSocket::open(17, &NflogConfig::default()).unwrap();
            let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let v4_port = v4.local_addr().unwrap().port();
            for _ in 0..200 {
                let _ = v4.send_to(b"ftagent nflog test", "127.0.0.1:9");
            }
            let v6 = std::net::UdpSocket::bind("[::1]:0").ok();
            let v6_sent = v6
                .as_ref()
                .map(|s| {
                    (0..50)
                        .filter(|_| s.send_to(b"x", "[::1]:9").is_ok())
                        .count()
                })
                .unwrap_or(0) as u64;
            let seen = collect(&mut sock, 200 + v6_sent, Duration::from_secs(3));
            let normal = sock.totals();
            // A second bind of the same group is refused (EPERM: owned by another port id).
            let busy = NflogSocket::open(17, &NflogConfig::default()).map(|_| ());
            // 2. A stalled reader with a tiny receive buffer: loss from sequence gaps.
            let tiny = NflogConfig {
                rcvbuf: 4096,
                qthresh: 16,
                ..NflogConfig::default()
            };
            let mut stalled = NflogSocket::open(18, &tiny).unwrap();
            let sent = 20_000u64;
            for _ in 0..sent {
                let _ = v4.send_to(b"flood", "127.0.0.1:10");
            }
            std::thread::sleep(Duration::from_millis(300)); // let the last batch flush
            stalled.drain(&mut |_, _| {});
            // One more packet after the stall reveals a lost tail.
            let _ = v4.send_to(b"probe", "127.0.0.1:10");
            std::thread::sleep(Duration::from_millis(300));
            stalled.drain(&mut |_, _| {});
            (
                seen,
                normal,
                v4_port,
                v6_sent,
                busy,
                stalled.totals(),
                sent + 1,
            )
        });
        let (seen, normal, v4_port, v6_sent, busy, stalled, sent) = result;
        eprintln!("normal: {normal:?}, v6 sent {v6_sent}; stalled: {stalled:?} of {sent}");
        assert_eq!(normal.packets, 200 + v6_sent, "{normal:?}");
        assert_eq!((normal.lost, normal.malformed), (0, 0));
        let v4_seen: Vec<_> = seen.iter().filter(|m| m.src.is_ipv4()).collect();
        assert_eq!(v4_seen.len(), 200);
        for m in v4_seen {
            assert_eq!(m.src, IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert_eq!(
                (m.proto, m.src_port, m.dst_port),
                (17, Some(v4_port), Some(9))
            );
            assert_eq!(m.len, 20 + 8 + 18);
        }
        for m in seen.iter().filter(|m| m.src.is_ipv6()) {
            assert_eq!(m.src, IpAddr::V6(Ipv6Addr::LOCALHOST));
            assert_eq!((m.dst_port, m.len), (Some(9), 40 + 8 + 1));
        }
        assert_eq!(
            busy.err().and_then(|e| e.errno()),
            Some(libc::EPERM),
            "second bind of a group"
        );
        assert!(stalled.enobufs > 0, "{stalled:?}");
        assert_eq!(stalled.packets + stalled.lost, sent, "{stalled:?}");
        drop(ns);
    }
}
