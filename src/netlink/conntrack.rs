//! ctnetlink: the conntrack table of this network namespace, counted and dumped over one
//! NETLINK_NETFILTER socket with one reusable receive buffer. Meant for periodic use (seconds),
//! not per packet, on a thread of its own. The count and dump requests are typed neli
//! messages (an nfgenmsg header, no attributes); the replies — up to hundreds of thousands of
//! entries, each a tree of nested attributes neli has no types for — are walked zero-copy and
//! handed to a callback, allocating nothing. Deletions keep the hand-written nested-tuple
//! encoder the tests share.

use std::fs::File;
use std::io::{self, Cursor};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use neli::consts::nl::NlmF;
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::{Size, ToBytes};

use super::diag::Bytes;
use super::socket::{open_netfilter, recv_into, send_to_kernel, Blocking};
use super::wire::{Attrs, Msg, Msgs, Writer, NFGENMSG_LEN, NLMSG_HDRLEN};
use super::wire::{NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK};
use super::{reply_end, NlError};
use abi::*;

/// Numbers from the kernel's `linux/netfilter/nfnetlink.h`, `nfnetlink_conntrack.h` and
/// `nf_conntrack_tcp.h` (stable ABI; checked against the 6.1 uapi headers).
pub(crate) mod abi {
    pub(crate) const NFNL_SUBSYS_CTNETLINK: u16 = 1;

    // enum cntl_msg_types
    pub(crate) const IPCTNL_MSG_CT_NEW: u16 = 0;
    pub(crate) const IPCTNL_MSG_CT_GET: u16 = 1;
    pub(crate) const IPCTNL_MSG_CT_DELETE: u16 = 2;
    pub(crate) const IPCTNL_MSG_CT_GET_STATS: u16 = 5;

    // enum ctattr_type
    pub(crate) const CTA_TUPLE_ORIG: u16 = 1;
    #[cfg(test)]
    pub(crate) const CTA_TUPLE_REPLY: u16 = 2;
    pub(crate) const CTA_PROTOINFO: u16 = 4;
    #[cfg(test)]
    pub(crate) const CTA_TIMEOUT: u16 = 7;

    // enum ctattr_tuple
    pub(crate) const CTA_TUPLE_IP: u16 = 1;
    pub(crate) const CTA_TUPLE_PROTO: u16 = 2;

    // enum ctattr_ip
    pub(crate) const CTA_IP_V4_SRC: u16 = 1;
    pub(crate) const CTA_IP_V4_DST: u16 = 2;
    pub(crate) const CTA_IP_V6_SRC: u16 = 3;
    pub(crate) const CTA_IP_V6_DST: u16 = 4;

    // enum ctattr_l4proto
    pub(crate) const CTA_PROTO_NUM: u16 = 1;
    pub(crate) const CTA_PROTO_SRC_PORT: u16 = 2;
    pub(crate) const CTA_PROTO_DST_PORT: u16 = 3;

    // enum ctattr_protoinfo, ctattr_protoinfo_tcp
    pub(crate) const CTA_PROTOINFO_TCP: u16 = 1;
    pub(crate) const CTA_PROTOINFO_TCP_STATE: u16 = 1;

    // enum ctattr_stats_global
    pub(crate) const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
    #[cfg(test)]
    pub(crate) const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;

    // enum tcp_conntrack: the state as seen from the original direction. An inbound
    // connection is SYN_SENT after the client's SYN, SYN_RECV after our SYN-ACK, ESTABLISHED
    // after the client's ACK.
    #[cfg(test)]
    pub(crate) const TCP_CONNTRACK_SYN_SENT: u8 = 1;
    #[cfg(test)]
    pub(crate) const TCP_CONNTRACK_SYN_RECV: u8 = 2;
    pub(crate) const TCP_CONNTRACK_ESTABLISHED: u8 = 3;
}

/// The user-space receive buffer; a dump datagram is at most 32 KiB on current kernels.
const RECV_BUF: usize = 256 * 1024;
/// The socket's receive queue (SO_RCVBUFFORCE, falling back to SO_RCVBUF).
const SOCKET_RCVBUF: usize = 256 * 1024;
/// A reply that has not come by then will not come.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The per-namespace entry count, read when the kernel lacks the stats request.
const PROC_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

const MSG_CT_NEW: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
const MSG_CT_GET: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
const MSG_CT_GET_STATS: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS;
const MSG_CT_DELETE: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
/// Deletions sent in one datagram (each acknowledged).
const DELETE_BATCH: usize = 64;

/// struct nfgenmsg: the family header of an nfnetlink message.
#[derive(Debug, Clone, Copy, neli::Size, neli::ToBytes)]
struct Nfgenmsg {
    family: u8,
    /// NFNETLINK_V0.
    version: u8,
    /// Big-endian; the subsystem's resource (a queue or log group), 0 for conntrack.
    res_id: Bytes<2>,
}

/// One conntrack entry, from its original tuple (the direction of the first packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP…).
    pub(crate) proto: u8,
    /// Present for protocols with ports (TCP, UDP, SCTP, DCCP, UDP-Lite).
    pub(crate) src_port: Option<u16>,
    pub(crate) dst_port: Option<u16>,
    /// TCP only: `enum tcp_conntrack` (3 = ESTABLISHED, see [`abi`]).
    pub(crate) tcp_state: Option<u8>,
}

impl Entry {
    /// Reads an entry from a conntrack message (a dump reply or an event). None when the
    /// original tuple is missing or malformed: no address pair of one family, no protocol
    /// number, or an attribute of the wrong size.
    pub(crate) fn parse(msg: &Msg) -> Option<Entry> {
        Entry::from_attrs(msg.nf_attrs())
    }

    fn from_attrs(attrs: Attrs) -> Option<Entry> {
        let mut orig = None;
        let mut protoinfo = None;
        for a in attrs {
            match a.kind() {
                CTA_TUPLE_ORIG if orig.is_none() => orig = Some(a.nested()),
                CTA_PROTOINFO if protoinfo.is_none() => protoinfo = Some(a.nested()),
                _ => {}
            }
        }
        let orig = orig?;
        let (src, dst) = addresses(orig.get(CTA_TUPLE_IP)?.nested())?;
        let (proto, src_port, dst_port) = l4(orig.get(CTA_TUPLE_PROTO)?.nested())?;
        let tcp_state = match protoinfo.and_then(|p| p.get(CTA_PROTOINFO_TCP)) {
            Some(tcp) => match tcp.nested().get(CTA_PROTOINFO_TCP_STATE) {
                Some(state) => Some(u8_of(state.bytes())?),
                None => None,
            },
            None => None,
        };
        Some(Entry {
            src,
            dst,
            proto,
            src_port,
            dst_port,
            tcp_state,
        })
    }
}

/// The source and destination of a CTA_TUPLE_IP nest; both present and of one family.
fn addresses(ip: Attrs) -> Option<(IpAddr, IpAddr)> {
    let (mut src, mut dst) = (None, None);
    for a in ip {
        let addr = match a.kind() {
            CTA_IP_V4_SRC | CTA_IP_V4_DST => {
                IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a.bytes()).ok()?))
            }
            CTA_IP_V6_SRC | CTA_IP_V6_DST => {
                IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a.bytes()).ok()?))
            }
            _ => continue,
        };
        match a.kind() {
            CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(addr),
            _ => dst = Some(addr),
        }
    }
    match (src?, dst?) {
        (s @ IpAddr::V4(_), d @ IpAddr::V4(_)) | (s @ IpAddr::V6(_), d @ IpAddr::V6(_)) => {
            Some((s, d))
        }
        _ => None,
    }
}

/// Protocol number and ports (big-endian u16) of a CTA_TUPLE_PROTO nest.
fn l4(proto: Attrs) -> Option<(u8, Option<u16>, Option<u16>)> {
    let (mut num, mut sport, mut dport) = (None, None, None);
    for a in proto {
        match a.kind() {
            CTA_PROTO_NUM => num = Some(u8_of(a.bytes())?),
            CTA_PROTO_SRC_PORT => sport = Some(be16_of(a.bytes())?),
            CTA_PROTO_DST_PORT => dport = Some(be16_of(a.bytes())?),
            _ => {}
        }
    }
    Some((num?, sport, dport))
}

fn u8_of(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [b] => Some(*b),
        _ => None,
    }
}

fn be16_of(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

/// What one dump delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DumpStats {
    /// Entries parsed and passed to the callback.
    pub(crate) entries: u64,
    /// Entry messages skipped because their original tuple was malformed.
    pub(crate) malformed: u64,
}

/// Whether a received datagram finished the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    More,
    Done,
}

/// Walks one received datagram of the dump answering `seq`: entries go to `on_entry`,
/// malformed ones are counted; messages of other requests are skipped. Panic-free on any
/// input (fuzzed below).
pub(crate) fn walk_dump(
    datagram: &[u8],
    seq: u32,
    stats: &mut DumpStats,
    on_entry: &mut dyn FnMut(&Entry),
) -> Result<Step, NlError> {
    for msg in Msgs::new(datagram) {
        let msg = msg?;
        if msg.seq() != seq {
            continue; // the tail of an earlier, abandoned request
        }
        if let Some(end) = reply_end(&msg, "dump conntrack table") {
            return end.map(|()| Step::Done);
        }
        match msg.kind() {
            MSG_CT_NEW | MSG_CT_GET => match Entry::parse(&msg) {
                Some(entry) => {
                    stats.entries += 1;
                    on_entry(&entry);
                }
                None => stats.malformed += 1,
            },
            _ => {} // NLMSG_NOOP, or a type we did not ask for
        }
    }
    Ok(Step::More)
}

/// Reads CTA_STATS_GLOBAL_ENTRIES from the replies to a stats request `seq`. None while the
/// reply has not been seen.
fn stats_reply(datagram: &[u8], seq: u32) -> Result<Option<u64>, NlError> {
    for msg in Msgs::new(datagram) {
        let msg = msg?;
        if msg.seq() != seq {
            continue;
        }
        match msg.kind() {
            MSG_CT_GET_STATS => {
                let entries = msg
                    .nf_attrs()
                    .get(CTA_STATS_GLOBAL_ENTRIES)
                    .and_then(|a| a.be32())
                    .ok_or_else(|| {
                        NlError::Malformed("conntrack stats without an entry count".into())
                    })?;
                return Ok(Some(u64::from(entries)));
            }
            NLMSG_ERROR => {
                let reply = msg
                    .error()
                    .ok_or_else(|| NlError::Malformed("short error message".into()))?;
                return Err(NlError::kernel(
                    "get conntrack stats".into(),
                    reply.code.saturating_neg(),
                    reply.ext_msg,
                ));
            }
            NLMSG_DONE => {
                return Err(NlError::Malformed(
                    "conntrack stats request ended without stats".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Our ctnetlink connection. Blocking, with a 5 s receive timeout; bound to the network
/// namespace of the thread that opened it.
#[derive(Debug)]
pub(crate) struct Conntrack {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// The encoded count or dump request (a typed neli message), its room kept.
    header: Vec<u8>,
    /// The deletions' requests.
    request: Writer,
    seq: u32,
    /// False once the kernel refused IPCTNL_MSG_CT_GET_STATS: `count` then reads /proc.
    stats_msg: bool,
    /// nf_conntrack_count of the namespace at open time (absent without nf_conntrack).
    proc_count: Option<File>,
    cut_dumps: u64,
    /// A dump of ours may still be running in the kernel (abandoned after an error): it must
    /// be read to its end before the kernel accepts another (EBUSY).
    dump_running: bool,
}

/// Appends a CTA_TUPLE_ORIG or CTA_TUPLE_REPLY nest: addresses, protocol and ports.
pub(crate) fn encode_tuple(
    w: &mut Writer,
    kind: u16,
    proto: u8,
    (src, dst): (IpAddr, IpAddr),
    (sport, dport): (Option<u16>, Option<u16>),
) {
    let t = w.nest_start(kind);
    let ip = w.nest_start(CTA_TUPLE_IP);
    for (k4, k6, a) in [
        (CTA_IP_V4_SRC, CTA_IP_V6_SRC, src),
        (CTA_IP_V4_DST, CTA_IP_V6_DST, dst),
    ] {
        match a {
            IpAddr::V4(a) => w.attr(k4, &a.octets()),
            IpAddr::V6(a) => w.attr(k6, &a.octets()),
        }
    }
    let _ = w.nest_end(ip);
    let p = w.nest_start(CTA_TUPLE_PROTO);
    w.attr(CTA_PROTO_NUM, &[proto]);
    if let Some(port) = sport {
        w.attr(CTA_PROTO_SRC_PORT, &port.to_be_bytes());
    }
    if let Some(port) = dport {
        w.attr(CTA_PROTO_DST_PORT, &port.to_be_bytes());
    }
    let _ = w.nest_end(p);
    let _ = w.nest_end(t);
}

/// The nfgenmsg family of an entry.
fn family_of(e: &Entry) -> u8 {
    match e.src {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

impl Conntrack {
    /// Deletes these entries by their original tuple, in batches of acknowledged requests; one
    /// already gone (ENOENT) is no error. Returns how many the kernel deleted. Not while a dump
    /// is being read (the caller deletes after it).
    pub(crate) fn delete(&mut self, entries: &[Entry]) -> Result<usize, NlError> {
        let mut deleted = 0;
        for chunk in entries.chunks(DELETE_BATCH) {
            self.request.clear();
            let first = self.seq.wrapping_add(1);
            for e in chunk {
                let seq = self.next_seq();
                self.request
                    .begin(MSG_CT_DELETE, NLM_F_ACK, seq, family_of(e), 0);
                let tuple = ((e.src, e.dst), (e.src_port, e.dst_port));
                encode_tuple(&mut self.request, CTA_TUPLE_ORIG, e.proto, tuple.0, tuple.1);
                self.request.end();
            }
            self.send("send conntrack deletions")?;
            let mut acked = 0;
            while acked < chunk.len() {
                let n = self.recv_raw(0).map_err(|source| NlError::Io {
                    op: "read conntrack deletion ACKs",
                    source,
                })?;
                for msg in Msgs::new(self.datagram(n)?).flatten() {
                    let Some(reply) = msg.error() else { continue };
                    if reply.seq.wrapping_sub(first) as usize >= chunk.len() {
                        continue; // not one of ours
                    }
                    acked += 1;
                    match reply.code.saturating_neg() {
                        0 => deleted += 1,
                        libc::ENOENT => {}
                        errno => {
                            let what = "delete a conntrack entry".to_string();
                            return Err(NlError::kernel(what, errno, reply.ext_msg));
                        }
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Opens the socket in the calling thread's network namespace, which it keeps.
    pub(crate) fn open() -> Result<Conntrack, NlError> {
        let fd = open_socket()?;
        Ok(Conntrack {
            fd,
            buf: vec![0; RECV_BUF],
            // Sized once: every count and dump request is the same 20 bytes.
            header: Vec::with_capacity(NLMSG_HDRLEN + NFGENMSG_LEN),
            request: Writer::new(),
            seq: 1,
            stats_msg: true,
            proc_count: File::open(PROC_COUNT).ok(),
            cut_dumps: 0,
            dump_running: false,
        })
    }

    /// The number of conntrack entries in this network namespace: one stats request (a few µs),
    /// or nf_conntrack_count where the kernel does not answer that request.
    pub(crate) fn count(&mut self) -> Result<u64, NlError> {
        if self.stats_msg {
            match self.count_by_stats() {
                Ok(n) => return Ok(n),
                Err(e)
                    if self.proc_count.is_some()
                        && matches!(
                            e.errno(),
                            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOENT)
                        ) =>
                {
                    log::info!("{e}; counting conntrack entries from {PROC_COUNT} instead");
                    self.stats_msg = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.count_by_proc()
    }

    fn count_by_stats(&mut self) -> Result<u64, NlError> {
        let seq = self.next_seq();
        let op = "send conntrack stats request";
        self.send_request(MSG_CT_GET_STATS, NlmF::empty(), seq, op)?;
        loop {
            let n = self.recv_raw(0).map_err(|source| NlError::Io {
                op: "read conntrack stats",
                source,
            })?;
            if let Some(count) = stats_reply(self.datagram(n)?, seq)? {
                return Ok(count);
            }
        }
    }

    fn count_by_proc(&mut self) -> Result<u64, NlError> {
        let file = self.proc_count.as_ref().ok_or_else(|| NlError::Io {
            op: "read nf_conntrack_count",
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        let mut text = [0u8; 24];
        let n = file.read_at(&mut text, 0).map_err(|source| NlError::Io {
            op: "read nf_conntrack_count",
            source,
        })?;
        std::str::from_utf8(text.get(..n).unwrap_or(&[]))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| NlError::Malformed("nf_conntrack_count is not a number".into()))
    }

    /// Dumps every conntrack entry of this namespace, IPv4 and IPv6, passing each to
    /// `on_entry`. Allocates nothing. An ENOBUFS means entries were lost: the rest of the dump
    /// is read and discarded, the error (errno ENOBUFS) returned and counted in `cut_dumps`;
    /// what `on_entry` saw of that dump is incomplete, and the socket stays usable. After any
    /// other error the next call first reads the abandoned dump to its end.
    pub(crate) fn dump(&mut self, on_entry: &mut dyn FnMut(&Entry)) -> Result<DumpStats, NlError> {
        if self.dump_running {
            self.discard_dump();
        }
        match self.dump_once(on_entry) {
            // Someone else's dump on this socket, or one we lost track of: finish it, retry.
            Err(e) if e.errno() == Some(libc::EBUSY) => {
                self.discard_dump();
                self.dump_once(on_entry)
            }
            result => result,
        }
    }

    fn dump_once(&mut self, on_entry: &mut dyn FnMut(&Entry)) -> Result<DumpStats, NlError> {
        let seq = self.next_seq();
        let op = "send conntrack dump request";
        self.send_request(MSG_CT_GET, NlmF::DUMP, seq, op)?;
        self.dump_running = true;
        let mut stats = DumpStats::default();
        loop {
            let n = match self.recv_raw(0) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.cut_dumps += 1;
                    self.discard_dump();
                    return Err(NlError::Io {
                        op: "conntrack dump cut short, entries lost (receive queue overran)",
                        source: e,
                    });
                }
                Err(source) => {
                    return Err(NlError::Io {
                        op: "read conntrack dump",
                        source,
                    })
                }
            };
            let datagram = self.datagram(n)?;
            match walk_dump(datagram, seq, &mut stats, on_entry) {
                Ok(Step::More) => {}
                Ok(Step::Done) => {
                    self.dump_running = false;
                    return Ok(stats);
                }
                Err(e) => {
                    // A kernel error is the dump's last message; anything else leaves it running.
                    if matches!(e, NlError::Kernel { .. }) {
                        self.dump_running = false;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Reads whatever dump is running on this socket to its end (every dump ends with
    /// NLMSG_DONE; only one runs at a time), discarding it. A running dump always has a
    /// datagram queued — the kernel makes the next one during each read — so an empty queue
    /// before NLMSG_DONE means it is stuck in the kernel (as after a failed allocation), where
    /// only a fresh socket gets out; the new one is opened in the calling thread's namespace.
    fn discard_dump(&mut self) {
        self.dump_running = false;
        loop {
            let n = match self.recv_raw(libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(_) => break,
            };
            let done = self
                .datagram(n)
                .is_ok_and(|d| Msgs::new(d).any(|m| m.is_ok_and(|m| m.kind() == NLMSG_DONE)));
            if done {
                return;
            }
        }
        match open_socket() {
            Ok(fd) => self.fd = fd,
            Err(e) => log::warn!("conntrack dump abandoned and the socket not renewed: {e}"),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, op: &'static str) -> Result<(), NlError> {
        send_to_kernel(&self.fd, self.request.bytes(), op)
    }

    /// Sends a request of `msg_type` for every family, without attributes: a typed neli
    /// message encoded into `header`, whose room is kept (no allocation once open).
    fn send_request(
        &mut self,
        msg_type: u16,
        flags: NlmF,
        seq: u32,
        op: &'static str,
    ) -> Result<(), NlError> {
        let fail = |e: String| NlError::Io {
            op,
            source: io::Error::other(e),
        };
        let nfgenmsg = Nfgenmsg {
            family: libc::AF_UNSPEC as u8,
            version: 0,
            res_id: Bytes([0; 2]),
        };
        let msg = NlmsghdrBuilder::default()
            .nl_type(msg_type)
            .nl_flags(NlmF::REQUEST | flags)
            .nl_seq(seq)
            .nl_pid(0) // the kernel
            .nl_payload(NlPayload::<u16, Nfgenmsg>::Payload(nfgenmsg))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut header = std::mem::take(&mut self.header);
        header.clear();
        let mut out = Cursor::new(header);
        let encoded = msg.to_bytes(&mut out);
        self.header = out.into_inner();
        encoded.map_err(|e| fail(e.to_string()))?;
        debug_assert_eq!(self.header.len(), msg.padded_size());
        send_to_kernel(&self.fd, &self.header, op)
    }

    /// The datagram just received, or an error when it did not fit the buffer.
    fn datagram(&self, n: usize) -> Result<&[u8], NlError> {
        self.buf.get(..n).ok_or_else(|| {
            NlError::Malformed(format!(
                "a {n}-byte netlink datagram did not fit the {RECV_BUF}-byte buffer"
            ))
        })
    }

    /// One datagram into the buffer; returns its full length (MSG_TRUNC), which exceeds the
    /// buffer when it was cut.
    fn recv_raw(&mut self, flags: libc::c_int) -> io::Result<usize> {
        loop {
            match recv_into(&self.fd, &mut self.buf, libc::MSG_TRUNC | flags) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

/// A blocking NETLINK_NETFILTER socket with the receive timeout, in the calling thread's
/// network namespace.
fn open_socket() -> Result<OwnedFd, NlError> {
    let (fd, _) = open_netfilter(
        "open ctnetlink socket",
        SOCKET_RCVBUF,
        Blocking::WithTimeout(REPLY_TIMEOUT),
    )?;
    Ok(fd)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alloc::thread_allocations;
    use crate::netlink::wire::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_MULTI};
    use crate::proto::{IPPROTO_TCP, IPPROTO_UDP};
    use crate::sense::connections::ConnectionTable;
    use std::time::Instant;

    /// Appends a conntrack message for `e` (type CT_NEW, as events and inserts use): original
    /// and reply tuples, a timeout and the TCP state. Dumps carry the same attributes.
    pub(crate) fn encode_entry(w: &mut Writer, flags: u16, seq: u32, e: &Entry) {
        w.begin(MSG_CT_NEW, flags, seq, family_of(e), 0);
        let (addrs, ports) = ((e.src, e.dst), (e.src_port, e.dst_port));
        encode_tuple(w, CTA_TUPLE_ORIG, e.proto, addrs, ports);
        encode_tuple(
            w,
            CTA_TUPLE_REPLY,
            e.proto,
            (e.dst, e.src),
            (e.dst_port, e.src_port),
        );
        w.attr_be32(CTA_TIMEOUT, 600);
        if let Some(state) = e.tcp_state {
            let pi = w.nest_start(CTA_PROTOINFO);
            let tcp = w.nest_start(CTA_PROTOINFO_TCP);
            w.attr(CTA_PROTOINFO_TCP_STATE, &[state]);
            w.nest_end(tcp).unwrap();
            w.nest_end(pi).unwrap();
        }
        w.end();
    }

    fn done(w: &mut Writer, seq: u32) {
        // NLMSG_DONE with a zero status; Writer adds an nfgenmsg-sized payload of zeros.
        w.begin(NLMSG_DONE, NLM_F_MULTI, seq, 0, 0);
        w.end();
    }

    fn tcp(src: [u8; 4], sport: u16, dport: u16) -> Entry {
        Entry {
            src: IpAddr::from(src),
            dst: IpAddr::from([192, 0, 2, 1]),
            proto: IPPROTO_TCP,
            src_port: Some(sport),
            dst_port: Some(dport),
            tcp_state: Some(TCP_CONNTRACK_ESTABLISHED),
        }
    }

    fn collect(datagram: &[u8], seq: u32) -> (Result<Step, NlError>, Vec<Entry>, DumpStats) {
        let mut seen = Vec::new();
        let mut stats = DumpStats::default();
        let r = walk_dump(datagram, seq, &mut stats, &mut |e| seen.push(*e));
        (r, seen, stats)
    }

    #[test]
    fn entries_round_trip_v4_v6_icmp() {
        let v6 = Entry {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            proto: IPPROTO_UDP,
            src_port: Some(5353),
            dst_port: Some(53),
            tcp_state: None,
        };
        let icmp = Entry {
            src: IpAddr::from([10, 0, 0, 1]),
            dst: IpAddr::from([10, 0, 0, 2]),
            proto: 1,
            src_port: None,
            dst_port: None,
            tcp_state: None,
        };
        let mut w = Writer::new();
        let entries = [tcp([198, 51, 100, 7], 40000, 443), v6, icmp];
        for e in &entries {
            encode_entry(&mut w, NLM_F_MULTI, 9, e);
        }
        encode_entry(&mut w, NLM_F_MULTI, 8, &entries[0]); // another request's: skipped
        done(&mut w, 9);
        let (r, seen, stats) = collect(w.bytes(), 9);
        assert_eq!(r.unwrap(), Step::Done);
        assert_eq!(seen, entries);
        assert_eq!(
            stats,
            DumpStats {
                entries: 3,
                malformed: 0
            }
        );
    }

    #[test]
    fn malformed_entries_are_counted_and_skipped() {
        let mut w = Writer::new();
        // No original tuple at all.
        w.begin(MSG_CT_GET, NLM_F_MULTI, 4, 2, 0);
        w.attr_be32(CTA_TIMEOUT, 1);
        w.end();
        // A 3-byte IPv4 address.
        w.begin(MSG_CT_GET, NLM_F_MULTI, 4, 2, 0);
        let t = w.nest_start(CTA_TUPLE_ORIG);
        let ip = w.nest_start(CTA_TUPLE_IP);
        w.attr(CTA_IP_V4_SRC, &[1, 2, 3]);
        w.attr(CTA_IP_V4_DST, &[1, 2, 3, 4]);
        w.nest_end(ip).unwrap();
        w.nest_end(t).unwrap();
        w.end();
        // Mixed families.
        w.begin(MSG_CT_GET, NLM_F_MULTI, 4, 2, 0);
        let t = w.nest_start(CTA_TUPLE_ORIG);
        let ip = w.nest_start(CTA_TUPLE_IP);
        w.attr(CTA_IP_V4_SRC, &[1, 2, 3, 4]);
        w.attr(CTA_IP_V6_DST, &[0; 16]);
        w.nest_end(ip).unwrap();
        let p = w.nest_start(CTA_TUPLE_PROTO);
        w.attr(CTA_PROTO_NUM, &[6]);
        w.nest_end(p).unwrap();
        w.nest_end(t).unwrap();
        w.end();
        encode_entry(&mut w, NLM_F_MULTI, 4, &tcp([10, 0, 0, 1], 1, 22));
        let (r, seen, stats) = collect(w.bytes(), 4);
        assert_eq!(r.unwrap(), Step::More);
        assert_eq!(seen.len(), 1);
        assert_eq!(stats.malformed, 3);
    }

    /// A message written byte by byte: header, then `payload` as is.
    fn raw_msg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn kernel_errors_end_the_dump() {
        let status = (-libc::EINTR).to_ne_bytes();
        let (r, _, _) = collect(&raw_msg(NLMSG_DONE, NLM_F_MULTI, 5, &status), 5);
        assert_eq!(r.unwrap_err().errno(), Some(libc::EINTR));

        // NLMSG_ERROR: the code, then the header of the request it answers.
        let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
        payload.extend_from_slice(&raw_msg(MSG_CT_GET, NLM_F_DUMP, 5, &[0; 4])[..16]);
        let err = raw_msg(NLMSG_ERROR, 0x100, 5, &payload);
        let (r, _, _) = collect(&err, 5);
        assert_eq!(r.unwrap_err().errno(), Some(libc::EPERM));
        assert_eq!(stats_reply(&err, 5).unwrap_err().errno(), Some(libc::EPERM));
        // The same error for another request is not ours.
        let (r, _, _) = collect(&err, 6);
        assert_eq!(r.unwrap(), Step::More);
    }

    #[test]
    fn stats_reply_reads_the_entry_count() {
        let mut w = Writer::new();
        w.begin(MSG_CT_GET_STATS, NLM_F_MULTI, 3, 0, 0);
        w.attr_be32(CTA_STATS_GLOBAL_ENTRIES, 123_456);
        w.attr_be32(CTA_STATS_GLOBAL_MAX_ENTRIES, 262_144);
        w.end();
        assert_eq!(stats_reply(w.bytes(), 3).unwrap(), Some(123_456));
        assert_eq!(stats_reply(w.bytes(), 2).unwrap(), None);
    }

    /// xorshift64*: enough randomness for mutation testing, no crates.
    pub(crate) struct XorShift(pub(crate) u64);

    impl XorShift {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn walker_survives_random_and_mutated_input() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut valid = Writer::new();
        for i in 0..8u8 {
            encode_entry(&mut valid, NLM_F_MULTI, 1, &tcp([10, 0, 0, i], 1000, 80));
        }
        done(&mut valid, 1);
        let valid = valid.bytes().to_vec();
        let mut buf = Vec::with_capacity(valid.len() + 64);
        let mut parsed = 0u64;
        for round in 0..20_000 {
            buf.clear();
            if round % 4 == 0 {
                // Pure noise, sometimes with a plausible first length.
                let len = rng.below(600);
                buf.extend((0..len).map(|_| rng.next() as u8));
                if len >= 4 && rng.below(2) == 0 {
                    buf[..4].copy_from_slice(&(len as u32).to_ne_bytes());
                }
            } else {
                buf.extend_from_slice(&valid);
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(buf.len());
                    match rng.below(4) {
                        0 => buf[at] = rng.next() as u8,
                        1 => buf[at] ^= 1 << rng.below(8),
                        2 => buf[at] = [0, 1, 3, 4, 0xff][rng.below(5)],
                        _ => buf.truncate(at),
                    }
                    if buf.is_empty() {
                        break;
                    }
                }
            }
            let mut stats = DumpStats::default();
            let _ = walk_dump(&buf, 1, &mut stats, &mut |e| {
                assert!(e.src.is_ipv4() == e.dst.is_ipv4());
            });
            let _ = stats_reply(&buf, 1);
            parsed += stats.entries;
        }
        assert!(
            parsed > 0,
            "mutation kept nothing valid: the test tests nothing"
        );
    }

    // ---- root tests: a throwaway network namespace, traffic only inside it ----

    use crate::netlink::testns::{connect_from, is_root, Netns};

    /// `fta-ct-<tag>-<pid>` with conntrack switched on by an nft rule (conntrack only tracks
    /// when some hook needs it).
    fn netns(tag: &str) -> Netns {
        let ns = Netns::create(&format!("ct-{tag}")).expect("a network namespace");
        ns.exec(&["nft", "add", "table", "inet", "t"])
            .expect("nft table");
        ns.exec(&[
            "nft",
            "add",
            "chain",
            "inet",
            "t",
            "c",
            "{ type filter hook output priority 0; }",
        ])
        .expect("nft chain");
        ns.exec(&[
            "nft", "add", "rule", "inet", "t", "c", "ct", "state", "new", "counter",
        ])
        .expect("nft rule");
        ns
    }

    #[test]
    fn root_counts_and_dumps_real_connections() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, nft, conntrack)");
            return;
        }
        let ns = netns("conn");
        ns.run(|| {
            const CONNS: usize = 50;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let client: Ipv4Addr = [127, 0, 0, 2].into();
            let mut streams = Vec::new();
            for _ in 0..CONNS {
                streams.push(
                    connect_from(
                        client,
                        std::net::SocketAddrV4::new([127, 0, 0, 1].into(), port),
                    )
                    .unwrap(),
                );
                streams.push(listener.accept().unwrap().0);
            }

            let mut ct = Conntrack::open().unwrap();
            let count = ct.count().unwrap();
            assert!(count >= CONNS as u64, "count {count}");
            assert_eq!(
                ct.count_by_proc().unwrap(),
                count,
                "stats vs nf_conntrack_count"
            );

            let mut table = ConnectionTable::new(&[(port, port)], &[], 4096);
            table.begin();
            let mut ours = 0;
            let stats = ct
                .dump(&mut |e| {
                    if e.dst_port == Some(port) && e.src == IpAddr::V4(client) {
                        assert_eq!(e.proto, IPPROTO_TCP);
                        assert_eq!(e.dst, IpAddr::from([127, 0, 0, 1]));
                        assert_eq!(e.tcp_state, Some(TCP_CONNTRACK_ESTABLISHED));
                        ours += 1;
                    }
                    table.add(e);
                })
                .unwrap();
            assert_eq!(ours, CONNS);
            assert_eq!(stats.malformed, 0);
            assert!(stats.entries >= CONNS as u64);
            let mut top = [(IpAddr::from([0, 0, 0, 0]), 0); 4];
            assert_eq!(table.top_sources(&mut top), 1);
            assert_eq!(top[0], (IpAddr::V4(client), CONNS as u32));
            assert_eq!(table.per_port(IPPROTO_TCP, port), CONNS as u32);
            assert_eq!(table.overflowed(), 0);
            // The socket is reusable, and a count and a dump + aggregation allocate nothing.
            let before = thread_allocations();
            ct.count().unwrap();
            table.begin();
            let again = ct
                .dump(&mut |e| {
                    table.add(e);
                })
                .unwrap();
            assert_eq!(thread_allocations() - before, 0, "allocations");
            assert_eq!(again.entries, stats.entries);
            assert_eq!(table.per_port(IPPROTO_TCP, port), CONNS as u32);
            drop(streams);
        });
    }

    #[test]
    fn root_an_abandoned_dump_does_not_block_the_next() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, nft, conntrack)");
            return;
        }
        let ns = netns("abandon");
        ns.run(|| {
            const N: u64 = 3000; // ~30 datagrams: the dump outlives its first read
            insert_entries(0, N as u32);
            let mut ct = Conntrack::open().unwrap();
            // Starts a dump and reads only its first datagram, as an error would leave it.
            let abandon = |ct: &mut Conntrack| {
                let seq = ct.next_seq();
                ct.request.clear();
                ct.request.begin(MSG_CT_GET, NLM_F_DUMP, seq, 0, 0);
                ct.request.end();
                ct.send("start dump").unwrap();
                ct.recv_raw(0).unwrap();
            };
            abandon(&mut ct);
            ct.dump_running = true;
            assert_eq!(ct.dump(&mut |_| {}).unwrap().entries, N);
            // Lost track of it: the kernel answers EBUSY; dump() finishes the old one, retries.
            abandon(&mut ct);
            let busy = ct.dump_once(&mut |_| {}).unwrap_err();
            assert_eq!(busy.errno(), Some(libc::EBUSY), "{busy}");
            abandon(&mut ct);
            assert_eq!(ct.dump(&mut |_| {}).unwrap().entries, N);
            assert_eq!(ct.count().unwrap(), N);
            assert_eq!(ct.dump(&mut |_| {}).unwrap().entries, N);
        });
    }

    /// Issue 14: a banned source's entries are deleted by their tuples, in acknowledged
    /// batches; deleting them again is no error (they are gone), and no other entry goes.
    #[test]
    fn root_entries_are_deleted_by_tuple() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, conntrack)");
            return;
        }
        let ns = netns("delete");
        ns.run(|| {
            insert_entries(0, 3000); // 3 entries from each of 1000 sources
            let mut ct = Conntrack::open().unwrap();
            let mut doomed = Vec::new();
            ct.dump(&mut |e| {
                if matches!(e.src, IpAddr::V4(a) if a.octets()[3] % 10 == 7) {
                    doomed.push(*e);
                }
            })
            .unwrap();
            let expected = (0..1000u32).filter(|s| (s & 0xff) % 10 == 7).count() * 3;
            assert_eq!(doomed.len(), expected);
            assert_eq!(ct.delete(&doomed).unwrap(), expected);
            assert_eq!(ct.delete(&doomed).unwrap(), 0, "already gone");
            let mut left = 0;
            ct.dump(&mut |e| {
                assert!(!doomed.contains(e), "{e:?}");
                left += 1;
            })
            .unwrap();
            assert_eq!(left, 3000 - expected);
        });
    }

    /// Inserts `n` established TCP entries to port 80 from 1000 sources (10.1.x.y), starting
    /// at index `from`, in batches of 1000 CT_NEW messages per send.
    fn insert_entries(from: u32, n: u32) {
        let mut ct = Conntrack::open().unwrap();
        let mut w = Writer::new();
        let mut i = from;
        while i < from + n {
            w.clear();
            let end = (i + 1000).min(from + n);
            for j in i..end {
                let s = j % 1000;
                let e = Entry {
                    src: IpAddr::from([10, 1, (s >> 8) as u8, s as u8]),
                    dst: IpAddr::from([10, 2, 0, 1]),
                    proto: IPPROTO_TCP,
                    src_port: Some(1024 + (j / 1000) as u16),
                    dst_port: Some(80),
                    tcp_state: Some(TCP_CONNTRACK_ESTABLISHED),
                };
                encode_entry(&mut w, NLM_F_CREATE | NLM_F_EXCL, j, &e);
            }
            ct.request.clear();
            ct.request.extend_raw(w.bytes());
            ct.send("insert").unwrap();
            // Only failures are answered (no NLM_F_ACK): nothing should be queued.
            let n = crate::sys::recv(&ct.fd, &mut ct.buf, libc::MSG_DONTWAIT).unwrap_or(0);
            if n > 0 {
                let first = Msgs::new(&ct.buf[..n]).next();
                let err = first
                    .and_then(|m| m.ok())
                    .and_then(|m| m.error().map(|e| e.code));
                panic!("inserting conntrack entries failed: {err:?}");
            }
            i = end;
        }
    }

    /// CPU time of the calling thread (user, system).
    fn thread_cpu() -> (Duration, Duration) {
        crate::sys::thread_cpu_time()
    }

    /// Timing of count() and dump() (+ aggregation) at 0, 5k and 50k entries, and the heap
    /// allocations of a dump. Run with
    /// `cargo test --release --lib dump_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark; needs root"]
    fn dump_cost() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let ns = netns("bench");
        ns.run(|| {
            const ROUNDS: u32 = 7;
            let mut ct = Conntrack::open().unwrap();
            let mut table = ConnectionTable::new(&[(80, 80)], &[], 4096);
            let mut inserted = 0;
            for target in [0u32, 5_000, 50_000] {
                let t = Instant::now();
                insert_entries(inserted, target - inserted);
                let insert = t.elapsed();
                inserted = target;
                assert_eq!(ct.count().unwrap(), u64::from(target));

                let t = Instant::now();
                for _ in 0..100 {
                    ct.count().unwrap();
                }
                let count_us = t.elapsed().as_secs_f64() * 1e6 / 100.0;

                let mut plain = Vec::with_capacity(ROUNDS as usize);
                let mut aggregated = Vec::with_capacity(ROUNDS as usize);
                let mut allocs = 0;
                let (mut user, mut sys) = (Duration::ZERO, Duration::ZERO);
                for _ in 0..ROUNDS {
                    let t = Instant::now();
                    let s = ct.dump(&mut |_| {}).unwrap();
                    plain.push(t.elapsed());
                    assert_eq!(s.entries, u64::from(target));

                    let before = thread_allocations();
                    let (u0, s0) = thread_cpu();
                    let t = Instant::now();
                    table.begin();
                    let s = ct
                        .dump(&mut |e| {
                            table.add(e);
                        })
                        .unwrap();
                    aggregated.push(t.elapsed());
                    let (u1, s1) = thread_cpu();
                    user += u1 - u0;
                    sys += s1 - s0;
                    allocs += thread_allocations() - before;
                    assert_eq!(s.entries, u64::from(target));
                }
                assert_eq!(table.per_port(IPPROTO_TCP, 80), target);
                plain.sort();
                aggregated.sort();
                println!(
                    "{target} entries: insert {insert:.1?}; count() {count_us:.1} µs; \
                     dump min {:.1?} median {:.1?}; dump+aggregate min {:.1?} median {:.1?} \
                     (CPU per dump: user {:.1?}, system {:.1?}); \
                     allocations in {ROUNDS} dump+aggregate rounds: {allocs}",
                    plain[0],
                    plain[ROUNDS as usize / 2],
                    aggregated[0],
                    aggregated[ROUNDS as usize / 2],
                    user / ROUNDS,
                    sys / ROUNDS,
                );
            }
        });
    }
}
