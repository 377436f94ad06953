//! One NETLINK_NETFILTER socket with one receive buffer, kept for the life of the process (a
//! table with the `owner` flag belongs to the socket that created it). Commits batches and
//! checks the ACK of every message; runs dumps and single-object requests.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::nft::Batch;
use super::wire::{Msg, Msgs, Writer};
use super::NlError;
use crate::sys;

const RECV_BUF: usize = 256 * 1024;
/// Room for the ACKs of a large batch.
const SOCKET_RCVBUF: usize = 4 * 1024 * 1024;
/// What one queued ACK or error costs the receive buffer (its skb's true size; nft reckons
/// 1 KiB a message too).
const ACK_TRUESIZE: usize = 1024;
/// A reply that has not come by then will not come.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct NftSocket {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
    /// The port id the kernel gave this socket (the table's owner when it is owned).
    port_id: u32,
    /// The send and receive buffer sizes last set (bytes the kernel accounts).
    sndbuf: usize,
    rcvbuf: usize,
}

impl NftSocket {
    pub(crate) fn open() -> Result<NftSocket, NlError> {
        let (fd, port_id) = open_netfilter(
            "nf_tables",
            SOCKET_RCVBUF,
            Blocking::WithTimeout(REPLY_TIMEOUT),
        )?;
        let sndbuf = buffer_size(&fd, Direction::Send);
        let rcvbuf = buffer_size(&fd, Direction::Receive);
        Ok(NftSocket {
            fd,
            buf: vec![0; RECV_BUF],
            seq: 1,
            port_id,
            sndbuf,
            rcvbuf,
        })
    }

    pub(crate) fn port_id(&self) -> u32 {
        self.port_id
    }

    /// Reserves `count` sequence numbers and returns the first.
    pub(crate) fn take_seqs(&mut self, count: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(count);
        first
    }

    /// A fresh batch whose sequence numbers follow this socket's.
    pub(crate) fn batch(&mut self) -> Batch {
        Batch::new(self.take_seqs(0))
    }

    /// Sends the batch as one transaction and checks an ACK for every message. The kernel
    /// handles a batch within the send call, so every reply is queued when send returns: the
    /// send buffer is first made large enough for the whole batch (a netlink send must fit in
    /// it) and the receive buffer for every reply (one ACK or error per message, 100k+ for a
    /// large batch), then every reply is read, up to the last message's.
    pub(crate) fn commit(&mut self, batch: &mut Batch) -> Result<(), NlError> {
        if batch.is_empty() {
            return Ok(());
        }
        let expected = batch.acked_count();
        let bytes = batch.finish();
        self.fit_buffers(bytes.len(), expected)?;
        self.send(bytes, "send batch")?;
        let (_, next) = batch.seq_range();
        self.seq = next;
        self.read_acks(batch, expected)
    }

    /// Reads the reply to each of the batch's `expected` messages. The first refusal is the
    /// error (the kernel rolled the whole batch back); an error for the batch itself (its
    /// begin marker) ends the wait, since no other reply follows it.
    fn read_acks(&mut self, batch: &Batch, expected: usize) -> Result<(), NlError> {
        let mut answered = vec![false; expected];
        let mut pending = expected;
        let mut failure: Option<NlError> = None;
        while pending > 0 {
            let n = match self.recv() {
                Ok(n) => n,
                Err(e) if failure.is_some() && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(source) => {
                    return Err(failure.unwrap_or(NlError::Io {
                        op: "read batch replies",
                        source,
                    }))
                }
            };
            for msg in Msgs::new(&self.buf[..n]) {
                let msg = msg.map_err(|e| NlError::Malformed(e.to_string()))?;
                let Some(reply) = msg.error() else { continue };
                let index = batch.index_of(reply.seq);
                if let Some(i) = index.filter(|&i| !answered[i]) {
                    answered[i] = true;
                    pending -= 1;
                }
                if reply.code != 0 && failure.is_none() {
                    let what = batch.label(reply.seq).unwrap_or("batch").to_string();
                    failure = Some(NlError::kernel(
                        what,
                        reply.code.saturating_neg(),
                        reply.ext_msg,
                    ));
                }
                if reply.code != 0 && index.is_none() && reply.seq == batch.seq_range().0 {
                    pending = 0; // the batch as a whole was refused: nothing else comes
                }
            }
        }
        if failure.is_some() {
            self.drain();
        }
        failure.map_or(Ok(()), Err)
    }

    /// Grows the send buffer to take a batch of `len` bytes in one send, and the receive
    /// buffer to hold `replies` ACKs at once (SO_*BUFFORCE, as nft does; the plain options,
    /// capped by net.core.wmem_max/rmem_max, where that is not permitted). A batch the send
    /// buffer still cannot take is an error that says why; a short receive buffer is not (it
    /// shows as ENOBUFS only if the replies really overflow it).
    fn fit_buffers(&mut self, len: usize, replies: usize) -> Result<(), NlError> {
        // The kernel refuses a send longer than the buffer less 32 bytes.
        let needed = len + 64;
        if self.sndbuf < needed {
            self.sndbuf = grow_buffer(&self.fd, Direction::Send, needed)
                .map_err(|e| NlError::BatchTooLarge { len, reason: e })?;
        }
        let room = SOCKET_RCVBUF.max(replies.saturating_mul(ACK_TRUESIZE));
        if self.rcvbuf < room {
            self.rcvbuf = grow_buffer(&self.fd, Direction::Receive, room).unwrap_or_else(|e| {
                log::warn!("nf_tables socket: {e}: the replies to a large batch may be lost");
                room // warned once for this size
            });
        }
        Ok(())
    }

    /// Sends one request (a dump, or a get with NLM_F_ACK) and passes each reply message to
    /// `on_msg` until the dump is done or the request is acknowledged.
    pub(crate) fn request(
        &mut self,
        request: &Writer,
        what: &str,
        on_msg: &mut dyn FnMut(&Msg),
    ) -> Result<(), NlError> {
        let seq = Msgs::new(request.bytes())
            .next()
            .and_then(|m| m.ok())
            .map(|m| m.seq());
        self.send(request.bytes(), "send request")?;
        loop {
            let n = self.recv().map_err(|source| NlError::Io {
                op: "read reply",
                source,
            })?;
            for msg in Msgs::new(&self.buf[..n]) {
                let msg = msg.map_err(|e| NlError::Malformed(e.to_string()))?;
                if Some(msg.seq()) != seq {
                    continue; // a late reply to something earlier
                }
                match super::reply_end(&msg, what) {
                    Some(end) => return end,
                    None => on_msg(&msg),
                }
            }
        }
    }

    fn send(&self, bytes: &[u8], op: &'static str) -> Result<(), NlError> {
        send_to_kernel(&self.fd, bytes, op)
    }

    fn recv(&mut self) -> io::Result<usize> {
        loop {
            match recv_into(&self.fd, &mut self.buf, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Discards whatever replies are still queued.
    fn drain(&mut self) {
        while matches!(recv_into(&self.fd, &mut self.buf, libc::MSG_DONTWAIT), Ok(n) if n > 0) {}
    }
}

/// Sends one datagram of netlink messages to the kernel; a short send is an error.
pub(crate) fn send_to_kernel(fd: &OwnedFd, bytes: &[u8], op: &'static str) -> Result<(), NlError> {
    let rc = sys::send_to_kernel(fd, bytes).map_err(|source| NlError::Io { op, source })?;
    if rc != bytes.len() {
        return Err(NlError::Malformed(format!(
            "{op}: short send of {rc} of {} bytes",
            bytes.len()
        )));
    }
    Ok(())
}

/// One recv(2) into `buf` with `flags`; the length the kernel reports (with MSG_TRUNC, the
/// datagram's real length, which may exceed the buffer).
pub(crate) fn recv_into(fd: &OwnedFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    sys::recv(fd, buf, flags)
}

/// How a netfilter socket waits for replies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Blocking {
    /// Blocking reads that give up after the timeout (request/response use).
    WithTimeout(Duration),
    /// Non-blocking, for registration with mio.
    No,
}

/// Opens and binds a NETLINK_NETFILTER socket: extended and capped ACKs, a receive buffer of
/// `rcvbuf` bytes (SO_RCVBUFFORCE where we may, else SO_RCVBUF, capped by rmem_max). Returns
/// the descriptor and the port id the kernel gave it. `what` names it in errors.
pub(crate) fn open_netfilter(
    what: &'static str,
    rcvbuf: usize,
    blocking: Blocking,
) -> Result<(OwnedFd, u32), NlError> {
    let mut flags = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
    if let Blocking::No = blocking {
        flags |= libc::SOCK_NONBLOCK;
    }
    let fail = |source| NlError::Io { op: what, source };
    let fd = sys::socket(libc::AF_NETLINK, flags, libc::NETLINK_NETFILTER).map_err(fail)?;
    let port_id = sys::bind_netlink(&fd).map_err(fail)?;
    let one: libc::c_int = 1;
    for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
        set_opt(&fd, libc::SOL_NETLINK, opt, &one);
    }
    let rcvbuf = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
    if !set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf) {
        set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf);
    }
    if let Blocking::WithTimeout(t) = blocking {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        if !set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv) {
            return Err(fail(io::Error::last_os_error()));
        }
    }
    Ok((fd, port_id))
}

/// A socket buffer: the send or the receive one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Send,
    Receive,
}

impl Direction {
    /// The option that sets it beyond the system maximum (needs CAP_NET_ADMIN), the plain
    /// option, and the sysctl that caps the plain one.
    fn options(self) -> (libc::c_int, libc::c_int, &'static str) {
        match self {
            Direction::Send => (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "net.core.wmem_max"),
            Direction::Receive => (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "net.core.rmem_max"),
        }
    }
}

/// The buffer's size as the kernel accounts it (twice what was asked for).
fn buffer_size(fd: &OwnedFd, direction: Direction) -> usize {
    let (_, plain, _) = direction.options();
    sys::getsockopt_int(fd, libc::SOL_SOCKET, plain)
        .map_or(0, |value| usize::try_from(value).unwrap_or(0))
}

/// Asks for a buffer of at least `needed` bytes: forced where permitted, else the plain
/// option. Returns the size it then has, or why it is still short.
fn grow_buffer(fd: &OwnedFd, direction: Direction, needed: usize) -> Result<usize, String> {
    let (force, plain, cap) = direction.options();
    let value = libc::c_int::try_from(needed).unwrap_or(libc::c_int::MAX);
    let forced = set_opt(fd, libc::SOL_SOCKET, force, &value);
    let refused = (!forced).then(io::Error::last_os_error);
    if !forced {
        set_opt(fd, libc::SOL_SOCKET, plain, &value);
    }
    let size = buffer_size(fd, direction);
    match refused {
        _ if size >= needed => Ok(size),
        Some(e) => Err(format!(
            "the socket buffer holds {size} bytes, {needed} are needed, and it cannot be raised past {cap} ({e}; raising it needs CAP_NET_ADMIN)"
        )),
        None => Err(format!(
            "the socket buffer holds {size} bytes, {needed} are needed"
        )),
    }
}

fn set_opt<T: Copy>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> bool {
    sys::setsockopt(fd, level, name, value).is_ok()
}
