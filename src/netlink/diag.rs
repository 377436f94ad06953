//! Which TCP and UDP sockets this network namespace holds, read over NETLINK_SOCK_DIAG
//! (inet_diag): the peers of established connections to a port (the operator's SSH sessions,
//! never to be locked out) and the listening sockets (services to propose). Also the one-shot
//! netlink dump over a private socket of any protocol, which `host` uses for routes and
//! addresses.
//!
//! Off the hot path (at start-up and every few seconds), so requests and replies are typed
//! neli messages (`InetDiagReqV2`, `InetDiagMsg`, `Rtattr`) on a neli socket; only the
//! framing of a received datagram and its end (NLMSG_DONE, NLMSG_ERROR) go through the
//! checked walker the nf_tables code shares, so that every dump reports errors alike.

use std::io::{self, Cursor};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use neli::consts::nl::NlmF;
use neli::consts::socket::{Msg as RecvFlags, NlFamily};
use neli::err::{DeError, SerError};
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::rtnl::{Rtattr, RtattrBuilder};
use neli::socket::NlSocket;
use neli::types::Buffer;
use neli::utils::Groups;
use neli::{FromBytes, Size, ToBytes, TypeSize};

use super::wire::{Msg, Msgs};
use super::{reply_end, NlError};

/// Constants of linux/sock_diag.h, linux/inet_diag.h and net/tcp_states.h; the structures
/// are the typed messages below.
pub(crate) mod abi {
    /// sock_diag.h: the request (and reply) type of inet_diag_req_v2 dumps.
    pub(crate) const SOCK_DIAG_BY_FAMILY: u16 = 20;

    /// Sizes of struct inet_diag_sockid, inet_diag_req_v2 and inet_diag_msg.
    pub(crate) const INET_DIAG_SOCKID_LEN: usize = 48;
    #[cfg(test)]
    pub(crate) const INET_DIAG_REQ_V2_LEN: usize = 56;
    #[cfg(test)]
    pub(crate) const INET_DIAG_MSG_LEN: usize = 72;

    /// The request's attribute holding a filter program (enum inet_diag_req_attrs), and the
    /// two operations of the one we send: local port at least / at most the next op's `no`.
    /// Each op is struct inet_diag_bc_op { u8 code; u8 yes; u16 no }: on true skip `yes`
    /// bytes, on false `no`; the socket is reported when the program ends exactly.
    pub(crate) const INET_DIAG_REQ_BYTECODE: u16 = 1;
    pub(crate) const INET_DIAG_BC_S_GE: u8 = 2;
    pub(crate) const INET_DIAG_BC_S_LE: u8 = 3;

    /// include/net/tcp_states.h (UDP reuses them: bound and unconnected is TCP_CLOSE).
    pub(crate) const TCP_ESTABLISHED: u8 = 1;
    pub(crate) const TCP_CLOSE: u8 = 7;
    pub(crate) const TCP_LISTEN: u8 = 10;
}

use abi::*;

/// N bytes as they are on the wire (addresses, big-endian ports). neli reads and writes byte
/// arrays but does not size them (`TypeSize`), which its derived structures need of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bytes<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> Default for Bytes<N> {
    fn default() -> Self {
        Bytes([0; N])
    }
}

impl<const N: usize> Size for Bytes<N> {
    fn unpadded_size(&self) -> usize {
        N
    }
}

impl<const N: usize> TypeSize for Bytes<N> {
    fn type_size() -> usize {
        N
    }
}

impl<const N: usize> ToBytes for Bytes<N> {
    fn to_bytes(&self, buffer: &mut Cursor<Vec<u8>>) -> Result<(), SerError> {
        self.0.to_bytes(buffer)
    }
}

impl<const N: usize> FromBytes for Bytes<N> {
    fn from_bytes(buffer: &mut Cursor<impl AsRef<[u8]>>) -> Result<Self, DeError> {
        <[u8; N]>::from_bytes(buffer).map(Bytes)
    }
}

/// struct inet_diag_sockid: ports and addresses are big-endian (an IPv4 address fills the
/// first 4 bytes of its field).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, neli::Size, neli::ToBytes, neli::FromBytes,
)]
pub(crate) struct InetDiagSockid {
    pub(crate) sport: Bytes<2>,
    pub(crate) dport: Bytes<2>,
    pub(crate) src: Bytes<16>,
    pub(crate) dst: Bytes<16>,
    pub(crate) ifindex: u32,
    pub(crate) cookie: Bytes<8>,
}

impl TypeSize for InetDiagSockid {
    fn type_size() -> usize {
        INET_DIAG_SOCKID_LEN
    }
}

/// struct inet_diag_req_v2: which sockets a SOCK_DIAG_BY_FAMILY dump asks for.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, neli::Size, neli::ToBytes, neli::FromBytes,
)]
pub(crate) struct InetDiagReqV2 {
    pub(crate) family: u8,
    pub(crate) protocol: u8,
    /// Extensions wanted (INET_DIAG_INFO…): none.
    pub(crate) ext: u8,
    pub(crate) pad: u8,
    /// Bit n set: sockets in TCP state n.
    pub(crate) states: u32,
    /// Only used to look up one socket; a dump ignores it.
    pub(crate) id: InetDiagSockid,
}

/// struct inet_diag_msg: one socket of a dump reply (attributes may follow; none are read).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, neli::Size, neli::ToBytes, neli::FromBytes,
)]
pub(crate) struct InetDiagMsg {
    pub(crate) family: u8,
    pub(crate) state: u8,
    pub(crate) timer: u8,
    pub(crate) retrans: u8,
    pub(crate) id: InetDiagSockid,
    pub(crate) expires: u32,
    pub(crate) rqueue: u32,
    pub(crate) wqueue: u32,
    pub(crate) uid: u32,
    pub(crate) inode: u32,
}

/// struct inet_diag_bc_op: one operation of a socket filter program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, neli::Size, neli::ToBytes, neli::FromBytes)]
pub(crate) struct InetDiagBcOp {
    pub(crate) code: u8,
    pub(crate) yes: u8,
    pub(crate) no: u16,
}

/// A dump request for sockets: the inet_diag_req_v2, then its attributes (a filter program).
#[derive(Debug, neli::Size, neli::ToBytes)]
pub(crate) struct InetDiagRequest {
    pub(crate) req: InetDiagReqV2,
    pub(crate) attrs: Vec<Rtattr<u16, Buffer>>,
}

/// Which listening sockets to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listening {
    /// TCP sockets in state LISTEN.
    Tcp,
    /// Bound, unconnected UDP sockets.
    Udp,
}

/// Remote addresses of the ESTABLISHED TCP connections whose local port is `local_port`
/// (called with 22: the operator's SSH sessions), IPv4 and IPv6, sorted and deduplicated.
/// A v4-mapped IPv6 peer (`::ffff:a.b.c.d`, a dual-stack socket) is reported as IPv4. The
/// kernel filters by port (a filter program in the request): a host holding 100,000 other
/// connections sends back only these, so this stays cheap enough to call every few seconds.
pub(crate) fn established_peers(local_port: u16) -> Result<Vec<IpAddr>, NlError> {
    let mut peers = Vec::new();
    let states = 1u32 << TCP_ESTABLISHED;
    for family in [libc::AF_INET, libc::AF_INET6] {
        let request = InetDiagRequest {
            req: inet_diag_request(family as u8, libc::IPPROTO_TCP as u8, states),
            attrs: vec![local_port_filter(local_port)?],
        };
        dump_sockets(family, libc::IPPROTO_TCP, request, &mut |sock| {
            if sock.state() == TCP_ESTABLISHED && sock.local_port() == local_port {
                peers.extend(sock.remote_addr());
            }
        })?;
    }
    peers.sort_unstable();
    peers.dedup();
    Ok(peers)
}

/// Local address and port of the listening TCP sockets (state LISTEN) or of the bound,
/// unconnected UDP sockets, IPv4 and IPv6, sorted and deduplicated. A wildcard socket shows
/// as `0.0.0.0` or `::`.
pub(crate) fn listening(proto: Listening) -> Result<Vec<(IpAddr, u16)>, NlError> {
    let (protocol, state) = match proto {
        Listening::Tcp => (libc::IPPROTO_TCP, TCP_LISTEN),
        Listening::Udp => (libc::IPPROTO_UDP, TCP_CLOSE),
    };
    let mut out = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let request = InetDiagRequest {
            req: inet_diag_request(family as u8, protocol as u8, 1u32 << state),
            attrs: Vec::new(),
        };
        dump_sockets(family, protocol, request, &mut |sock| {
            if sock.state() == state {
                if let Some(addr) = sock.local_addr() {
                    out.push((addr, sock.local_port()));
                }
            }
        })?;
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// An inet_diag_req_v2 asking for every socket of `family` and `protocol` in `states` (a
/// bitmask of TCP states), without extensions.
pub(crate) fn inet_diag_request(family: u8, protocol: u8, states: u32) -> InetDiagReqV2 {
    InetDiagReqV2 {
        family,
        protocol,
        states,
        ..InetDiagReqV2::default()
    }
}

/// The INET_DIAG_REQ_BYTECODE attribute of a program keeping the sockets whose local port is
/// `port`: `port <= sport`, then `sport <= port` (the two oldest operations: every kernel has
/// them).
pub(crate) fn local_port_filter(port: u16) -> Result<Rtattr<u16, Buffer>, NlError> {
    // Program of 16 bytes: false at the first test jumps 4 past the end, at the second too.
    let op = |code, yes, no| InetDiagBcOp { code, yes, no };
    let program = vec![
        op(INET_DIAG_BC_S_GE, 8, 20),
        op(0, 0, port),
        op(INET_DIAG_BC_S_LE, 8, 12),
        op(0, 0, port),
    ];
    RtattrBuilder::default()
        .rta_type(INET_DIAG_REQ_BYTECODE)
        .rta_payload(program)
        .build()
        .map_err(|e| NlError::Malformed(format!("sock_diag: port filter: {e}")))
}

/// Dumps the sockets `request` asks for.
fn dump_sockets(
    family: libc::c_int,
    protocol: libc::c_int,
    request: InetDiagRequest,
    on_sock: &mut dyn FnMut(DiagMsg),
) -> Result<(), NlError> {
    let what = match (family, protocol) {
        (libc::AF_INET, libc::IPPROTO_TCP) => "sock_diag: dump IPv4 TCP sockets",
        (libc::AF_INET, _) => "sock_diag: dump IPv4 UDP sockets",
        (_, libc::IPPROTO_TCP) => "sock_diag: dump IPv6 TCP sockets",
        _ => "sock_diag: dump IPv6 UDP sockets",
    };
    dump(
        NlFamily::SockOrInetDiag,
        what,
        SOCK_DIAG_BY_FAMILY,
        request,
        &mut |m| {
            if let Some(sock) = DiagMsg::from_msg(m) {
                on_sock(sock)
            }
        },
    )
}

/// One socket of a dump reply: its inet_diag_msg, read whole.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiagMsg {
    m: InetDiagMsg,
}

impl DiagMsg {
    /// The socket a SOCK_DIAG_BY_FAMILY reply describes; None for any other message or one
    /// too short to hold an inet_diag_msg.
    pub(crate) fn from_msg(msg: &Msg) -> Option<DiagMsg> {
        if msg.kind() != SOCK_DIAG_BY_FAMILY {
            return None;
        }
        let m = InetDiagMsg::from_bytes(&mut Cursor::new(msg.payload())).ok()?;
        Some(DiagMsg { m })
    }

    pub(crate) fn family(&self) -> u8 {
        self.m.family
    }

    pub(crate) fn state(&self) -> u8 {
        self.m.state
    }

    pub(crate) fn local_port(&self) -> u16 {
        u16::from_be_bytes(self.m.id.sport.0)
    }

    #[cfg(test)]
    pub(crate) fn remote_port(&self) -> u16 {
        u16::from_be_bytes(self.m.id.dport.0)
    }

    /// The local address; None for a family other than IPv4 and IPv6.
    pub(crate) fn local_addr(&self) -> Option<IpAddr> {
        self.addr(self.m.id.src.0)
    }

    /// The remote address; None for a family other than IPv4 and IPv6.
    pub(crate) fn remote_addr(&self) -> Option<IpAddr> {
        self.addr(self.m.id.dst.0)
    }

    fn addr(&self, bytes: [u8; 16]) -> Option<IpAddr> {
        match i32::from(self.family()) {
            libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            libc::AF_INET6 => Some(unmap(Ipv6Addr::from(bytes))),
            _ => None,
        }
    }
}

/// `::ffff:a.b.c.d` as the IPv4 address it stands for; any other IPv6 address unchanged.
fn unmap(a: Ipv6Addr) -> IpAddr {
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

// ---- one-shot dumps over a private netlink socket ----

const RECV_BUF: usize = 64 * 1024;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const DUMP_SEQ: u32 = 1;

/// Opens a netlink socket of `family`, sends one dump request of `msg_type` whose payload is
/// `payload` (the family's typed header: inet_diag_req_v2, rtmsg, ifaddrmsg...), and passes
/// each reply message to `on_msg` until the dump is done. `what` names the dump in errors.
pub(crate) fn dump<P: Size + ToBytes>(
    family: NlFamily,
    what: &'static str,
    msg_type: u16,
    payload: P,
    on_msg: &mut dyn FnMut(&Msg),
) -> Result<(), NlError> {
    let socket = open(family, what)?;
    let request = dump_request(msg_type, DUMP_SEQ, payload)?;
    let sent = socket
        .send(&request, RecvFlags::empty())
        .map_err(|source| NlError::Io { op: what, source })?;
    if sent != request.len() {
        return Err(NlError::Malformed(format!(
            "{what}: short send of {sent} of {} bytes",
            request.len()
        )));
    }
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = match socket.recv(&mut buf[..], RecvFlags::TRUNC) {
            Ok((n, _)) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(NlError::Io { op: what, source }),
        };
        if n == 0 {
            return Err(NlError::Malformed(format!("{what}: empty reply")));
        }
        if n > buf.len() {
            return Err(NlError::Malformed(format!(
                "{what}: a {n}-byte reply exceeds the {}-byte buffer",
                buf.len()
            )));
        }
        if let Walk::Done = walk(&buf[..n], DUMP_SEQ, what, on_msg)? {
            return Ok(());
        }
    }
}

/// One request message: netlink header (NLM_F_REQUEST | NLM_F_DUMP) and `payload`, as bytes.
pub(crate) fn dump_request<P: Size + ToBytes>(
    msg_type: u16,
    seq: u32,
    payload: P,
) -> Result<Vec<u8>, NlError> {
    let msg = NlmsghdrBuilder::default()
        .nl_type(msg_type)
        .nl_flags(NlmF::REQUEST | NlmF::DUMP)
        .nl_seq(seq)
        .nl_pid(0) // the kernel
        .nl_payload(NlPayload::<u16, P>::Payload(payload))
        .build()
        .map_err(|e| NlError::Malformed(format!("build a dump request: {e}")))?;
    to_bytes(&msg)
}

/// A typed netlink structure as the bytes the kernel reads.
pub(crate) fn to_bytes(value: &(impl Size + ToBytes)) -> Result<Vec<u8>, NlError> {
    let mut out = Cursor::new(Vec::with_capacity(value.padded_size()));
    value
        .to_bytes(&mut out)
        .map_err(|e| NlError::Malformed(format!("encode a request: {e}")))?;
    Ok(out.into_inner())
}

/// Whether a dump goes on after a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    More,
    Done,
}

/// Walks the messages of one received datagram of a dump with sequence number `seq`: data
/// messages go to `on_msg`; NLMSG_DONE ends the dump (with the error a dump may carry in it),
/// NLMSG_ERROR ends it with the kernel's error. Panic-free on any input: the lengths are
/// checked here before any message reaches a typed parser.
pub(crate) fn walk(
    datagram: &[u8],
    seq: u32,
    what: &str,
    on_msg: &mut dyn FnMut(&Msg),
) -> Result<Walk, NlError> {
    for msg in Msgs::new(datagram) {
        let msg = msg?;
        if msg.seq() != seq {
            continue; // not ours (cannot happen on a private socket, but costs nothing)
        }
        if let Some(end) = reply_end(&msg, what) {
            return end.map(|()| Walk::Done);
        }
        on_msg(&msg);
    }
    Ok(Walk::More)
}

/// A blocking netlink socket of `family` (neli's), asking for extended ACKs, whose reads
/// give up after REPLY_TIMEOUT.
fn open(family: NlFamily, what: &'static str) -> Result<NlSocket, NlError> {
    let fail = |source| NlError::Io { op: what, source };
    let socket = NlSocket::connect(family, None, Groups::empty()).map_err(fail)?;
    // Best effort: an error's explanation in words.
    let _ = socket.enable_ext_ack(true);
    let tv = libc::timeval {
        tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: REPLY_TIMEOUT.subsec_micros() as libc::suseconds_t,
    };
    crate::sys::setsockopt_raw(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
        .map_err(fail)?;
    Ok(socket)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::netlink::wire::NLM_F_MULTI;
    use crate::netlink::wire::{align, NLMSG_HDRLEN, NLM_F_DUMP, NLM_F_REQUEST};
    use crate::netlink::wire::{NLMSG_DONE, NLMSG_ERROR};

    /// xorshift64*: deterministic randomness without crates.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// One netlink message as the kernel would send it.
    pub(crate) fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align(len), 0);
        out
    }

    pub(crate) fn done(seq: u32, status: i32) -> Vec<u8> {
        nlmsg(NLMSG_DONE, NLM_F_MULTI, seq, &status.to_ne_bytes())
    }

    /// Feeds `rounds` buffers to `f`: half are `seed` with a few bytes changed and cut
    /// somewhere, half are random bytes.
    pub(crate) fn fuzz(seed: &[u8], rounds: usize, f: &mut dyn FnMut(&[u8])) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; seed.len().max(512)];
        for round in 0..rounds {
            let len = if round % 2 == 0 {
                buf[..seed.len()].copy_from_slice(seed);
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
                // Now and then a plausible message length, so the walker goes deeper.
                if len >= 16 && rng.next() % 2 == 0 {
                    let claimed = 16 + (rng.next() as usize) % (len - 15);
                    buf[..4].copy_from_slice(&(claimed as u32).to_ne_bytes());
                    buf[8..12].copy_from_slice(&DUMP_SEQ.to_ne_bytes());
                }
                len
            };
            f(&buf[..len]);
        }
    }

    /// An inet_diag_msg payload.
    fn diag_msg(
        family: u8,
        state: u8,
        local: (&[u8], u16),
        remote: (&[u8], u16),
        attrs: &[u8],
    ) -> Vec<u8> {
        let mut id = InetDiagSockid {
            sport: Bytes(local.1.to_be_bytes()),
            dport: Bytes(remote.1.to_be_bytes()),
            ifindex: 3,
            cookie: Bytes([0xaa; 8]),
            ..InetDiagSockid::default()
        };
        id.src.0[..local.0.len()].copy_from_slice(local.0);
        id.dst.0[..remote.0.len()].copy_from_slice(remote.0);
        let m = InetDiagMsg {
            family,
            state,
            id,
            inode: 12345,
            ..InetDiagMsg::default()
        };
        let mut p = to_bytes(&m).unwrap();
        assert_eq!(p.len(), INET_DIAG_MSG_LEN);
        p.extend_from_slice(attrs);
        p
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    fn sample_datagram() -> Vec<u8> {
        let mut d = Vec::new();
        let tcp_info_attr = [8u8, 0, 2, 0, 1, 2, 3, 4]; // an INET_DIAG_INFO-like attribute
        d.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_MULTI,
            DUMP_SEQ,
            &diag_msg(
                libc::AF_INET as u8,
                TCP_ESTABLISHED,
                (&[10, 0, 0, 1], 22),
                (&[192, 0, 2, 7], 50123),
                &tcp_info_attr,
            ),
        ));
        d.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_MULTI,
            DUMP_SEQ,
            &diag_msg(
                libc::AF_INET6 as u8,
                TCP_ESTABLISHED,
                (&v6("::ffff:10.0.0.1"), 22),
                (&v6("::ffff:198.51.100.9"), 40000),
                &[],
            ),
        ));
        d.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_MULTI,
            DUMP_SEQ,
            &diag_msg(
                libc::AF_INET6 as u8,
                TCP_ESTABLISHED,
                (&v6("2001:db8::1"), 22),
                (&v6("2001:db8::beef"), 40001),
                &[],
            ),
        ));
        d.extend(done(DUMP_SEQ, 0));
        d
    }

    #[test]
    fn request_layout_matches_the_headers() {
        let typed = inet_diag_request(libc::AF_INET6 as u8, libc::IPPROTO_UDP as u8, 1 << 7);
        let req = to_bytes(&typed).unwrap();
        assert_eq!(
            to_bytes(&InetDiagSockid::default()).unwrap().len(),
            INET_DIAG_SOCKID_LEN
        );
        assert_eq!(req.len(), INET_DIAG_REQ_V2_LEN);
        assert_eq!(req.len(), 56);
        assert_eq!(req[0], 10);
        assert_eq!(req[1], 17);
        assert_eq!(u32::from_ne_bytes(req[4..8].try_into().unwrap()), 0x80);
        assert!(req[8..].iter().all(|&b| b == 0));
        let msg = dump_request(SOCK_DIAG_BY_FAMILY, 9, typed).unwrap();
        assert_eq!(msg.len(), 72);
        let m = Msgs::new(&msg).next().unwrap().unwrap();
        assert_eq!(m.kind(), 20);
        assert_eq!(m.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(m.seq(), 9);
        assert_eq!(m.payload(), &req[..]);
    }

    #[test]
    fn issue15_the_port_filter_keeps_one_local_port() {
        let a = to_bytes(&local_port_filter(22).unwrap()).unwrap();
        assert_eq!(a.len(), 20);
        assert_eq!(u16::from_ne_bytes([a[0], a[1]]), 20);
        assert_eq!(u16::from_ne_bytes([a[2], a[3]]), 1);
        let op = |i: usize| {
            (
                a[4 + 4 * i],
                a[5 + 4 * i],
                u16::from_ne_bytes([a[6 + 4 * i], a[7 + 4 * i]]),
            )
        };
        assert_eq!(
            [op(0), op(1), op(2), op(3)],
            [(2, 8, 20), (0, 0, 22), (3, 8, 12), (0, 0, 22)]
        );
    }

    #[test]
    fn reply_walker_reads_sockets_and_stops_at_done() {
        let d = sample_datagram();
        let mut seen = Vec::new();
        let flow = walk(&d, DUMP_SEQ, "test", &mut |m| {
            let s = DiagMsg::from_msg(m).unwrap();
            seen.push((
                s.state(),
                s.local_addr().unwrap(),
                s.local_port(),
                s.remote_addr().unwrap(),
                s.remote_port(),
            ));
        })
        .unwrap();
        assert_eq!(flow, Walk::Done);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            seen,
            vec![
                (1, ip("10.0.0.1"), 22, ip("192.0.2.7"), 50123),
                (1, ip("10.0.0.1"), 22, ip("198.51.100.9"), 40000),
                (1, ip("2001:db8::1"), 22, ip("2001:db8::beef"), 40001),
            ]
        );
        // Without DONE the dump goes on.
        let cut = d.len() - done(DUMP_SEQ, 0).len();
        assert_eq!(
            walk(&d[..cut], DUMP_SEQ, "t", &mut |_| {}).unwrap(),
            Walk::More
        );
    }

    #[test]
    fn reply_walker_reports_errors_and_skips_strangers() {
        // DONE with a negative status is the dump's failure.
        let err = walk(
            &done(DUMP_SEQ, -libc::ENOENT),
            DUMP_SEQ,
            "dump x",
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert!(err.to_string().starts_with("dump x: "), "{err}");
        // NLMSG_ERROR: code, then the original header.
        let mut p = (-libc::EPERM).to_ne_bytes().to_vec();
        p.extend(dump_request(SOCK_DIAG_BY_FAMILY, DUMP_SEQ, [0u8; 56]).unwrap());
        let err = walk(
            &nlmsg(NLMSG_ERROR, 0, DUMP_SEQ, &p),
            DUMP_SEQ,
            "x",
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EPERM));
        // i32::MIN as an error code must not overflow.
        let mut p = i32::MIN.to_ne_bytes().to_vec();
        p.extend(dump_request(SOCK_DIAG_BY_FAMILY, DUMP_SEQ, [0u8; 0]).unwrap());
        let _ = walk(
            &nlmsg(NLMSG_ERROR, 0, DUMP_SEQ, &p),
            DUMP_SEQ,
            "x",
            &mut |_| {},
        );
        let _ = walk(&done(DUMP_SEQ, i32::MIN), DUMP_SEQ, "x", &mut |_| {});
        // Another sequence number, a short inet_diag_msg and another type are skipped.
        let mut d = Vec::new();
        d.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 0, 77, &[0; 72]));
        d.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 0, DUMP_SEQ, &[2; 71]));
        d.extend(nlmsg(21, 0, DUMP_SEQ, &[2; 72]));
        let mut n = 0;
        let flow = walk(&d, DUMP_SEQ, "x", &mut |m| {
            n += DiagMsg::from_msg(m).is_some() as usize
        })
        .unwrap();
        assert_eq!((flow, n), (Walk::More, 0));
        // An unknown family has no addresses.
        let p = diag_msg(44, 1, (&[1, 2, 3, 4], 1), (&[5, 6, 7, 8], 2), &[]);
        let m = nlmsg(SOCK_DIAG_BY_FAMILY, 0, DUMP_SEQ, &p);
        let m = Msgs::new(&m).next().unwrap().unwrap();
        let s = DiagMsg::from_msg(&m).unwrap();
        assert_eq!(
            (s.local_addr(), s.remote_addr(), s.local_port()),
            (None, None, 1)
        );
        // A header that lies about its length is malformed.
        let mut bad = sample_datagram();
        bad[0..4].copy_from_slice(&100_000u32.to_ne_bytes());
        assert!(matches!(
            walk(&bad, DUMP_SEQ, "x", &mut |_| {}),
            Err(NlError::Malformed(_))
        ));
    }

    #[test]
    fn random_and_mutated_replies_never_panic() {
        let seed = sample_datagram();
        let mut parsed = 0usize;
        fuzz(&seed, 20_000, &mut |buf| {
            let _ = walk(buf, DUMP_SEQ, "fuzz", &mut |m| {
                if let Some(s) = DiagMsg::from_msg(m) {
                    parsed += 1;
                    let _ = (s.family(), s.state(), s.local_port(), s.remote_port());
                    let _ = (s.local_addr(), s.remote_addr());
                }
            });
        });
        assert!(parsed > 1000, "mutation kept nothing valid: {parsed}");
    }

    // ---- root tests: a throwaway network namespace, traffic only inside it ----

    use std::net::{TcpListener, UdpSocket};

    use crate::netlink::testns::{connect_from, is_root, Netns};

    /// `fta-diag-<pid>`: dummy d0 (or veth d0, peer d0p, where the kernel has no dummy driver)
    /// with 10.250.77.2/24 and a default route via .1.
    fn routed_netns() -> Netns {
        let ns = Netns::create("diag").expect("a network namespace");
        if let Err(dummy) = ns.exec(&["ip", "link", "add", "d0", "type", "dummy"]) {
            ns.exec(&[
                "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0p",
            ])
            .unwrap_or_else(|veth| panic!("{dummy}; {veth}"));
            ns.exec(&["ip", "link", "set", "d0p", "up"])
                .expect("d0p up");
        }
        ns.exec(&["ip", "link", "set", "d0", "up"]).expect("d0 up");
        ns.exec(&["ip", "addr", "add", "10.250.77.2/24", "dev", "d0"])
            .expect("address");
        ns.exec(&["ip", "route", "add", "default", "via", "10.250.77.1"])
            .expect("default route");
        ns
    }

    #[test]
    fn root_sees_routes_listeners_and_peers_in_a_namespace() {
        if !is_root() {
            eprintln!("skipped: needs root (creates a network namespace)");
            return;
        }
        let ns = routed_netns();
        ns.run(|| {
            use crate::netlink::host;
            let ip = |s: &str| s.parse::<IpAddr>().unwrap();

            assert_eq!(host::default_gateways().unwrap(), vec![ip("10.250.77.1")]);

            let listener = TcpListener::bind("127.0.0.1:2222").unwrap();
            let tcp = listening(Listening::Tcp).unwrap();
            assert!(tcp.contains(&(ip("127.0.0.1"), 2222)), "{tcp:?}");
            assert_eq!(established_peers(2222).unwrap(), Vec::<IpAddr>::new());

            let client =
                connect_from([127, 0, 0, 2].into(), "127.0.0.1:2222".parse().unwrap()).unwrap();
            let (server, from) = listener.accept().unwrap();
            assert_eq!(from.ip(), ip("127.0.0.2"));
            assert_eq!(established_peers(2222).unwrap(), vec![ip("127.0.0.2")]);
            // The client's side has port 2222 as its remote, not its local, port.
            let client_port = client.local_addr().unwrap().port();
            assert_eq!(
                established_peers(client_port).unwrap(),
                vec![ip("127.0.0.1")]
            );

            // A dual-stack listener: its IPv4 peer comes back v4-mapped and is unmapped.
            let dual = TcpListener::bind("[::]:2224").unwrap();
            let _c2 =
                connect_from([127, 0, 0, 3].into(), "127.0.0.1:2224".parse().unwrap()).unwrap();
            let (_s2, from2) = dual.accept().unwrap();
            assert_eq!(from2.ip(), ip("::ffff:127.0.0.3"));
            assert_eq!(established_peers(2224).unwrap(), vec![ip("127.0.0.3")]);
            let tcp = listening(Listening::Tcp).unwrap();
            assert!(tcp.contains(&(ip("::"), 2224)), "{tcp:?}");
            // Established sockets are not listening ones.
            assert!(!tcp.iter().any(|&(_, p)| p == client_port), "{tcp:?}");

            let udp = UdpSocket::bind("127.0.0.1:5353").unwrap();
            let udp6 = UdpSocket::bind("[::1]:5354").unwrap();
            let connected = UdpSocket::bind("127.0.0.1:5355").unwrap();
            connected.connect("127.0.0.1:5353").unwrap();
            let udps = listening(Listening::Udp).unwrap();
            assert!(udps.contains(&(ip("127.0.0.1"), 5353)), "{udps:?}");
            assert!(udps.contains(&(ip("::1"), 5354)), "{udps:?}");
            assert!(!udps.iter().any(|&(_, p)| p == 5355), "connected: {udps:?}");
            let tcp_ports: Vec<u16> = listening(Listening::Tcp)
                .unwrap()
                .iter()
                .map(|&(_, p)| p)
                .collect();
            assert!(!tcp_ports.contains(&5353), "{tcp_ports:?}");

            // The whole safelist, with a resolv.conf of our own.
            let conf = std::env::temp_dir().join(format!("fta-diag-{}.conf", std::process::id()));
            std::fs::write(&conf, "nameserver 192.0.2.53\nnameserver fe80::53%d0\n").unwrap();
            let mut parts = host::AutoSafelist::default();
            let mut warnings = parts.read_sessions(2222);
            warnings.extend(parts.read_routes_and_resolvers(&conf));
            let safe = parts.cidrs();
            let _ = std::fs::remove_file(&conf);
            assert!(warnings.is_empty(), "{warnings:?}");
            let hosts: Vec<IpAddr> = safe.iter().map(|c| c.addr()).collect();
            for want in [
                "127.0.0.1",
                "10.250.77.2",
                "10.250.77.1",
                "192.0.2.53",
                "fe80::53",
                "127.0.0.2",
                "::1",
            ] {
                assert!(hosts.contains(&ip(want)), "{want} missing from {hosts:?}");
            }
            assert!(safe.iter().all(|c| c.is_host()), "{safe:?}");
            let mut sorted = safe.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted, safe);
            drop((server, client, udp, udp6, connected));
        });
        drop(ns);
    }
}
