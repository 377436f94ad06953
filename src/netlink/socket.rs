//! One NETLINK_NETFILTER socket with one receive buffer, kept for the life of the process (a
//! table with the `owner` flag belongs to the socket that created it). Commits batches and
//! checks the ACK of every message; runs dumps and single-object requests.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::nft::Batch;
use super::wire::{Msg, Msgs, Writer};
use super::NlError;

const RECV_BUF: usize = 256 * 1024;
/// Room for the ACKs of a large batch.
const SOCKET_RCVBUF: usize = 4 * 1024 * 1024;
/// A reply that has not come by then will not come.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct NftSocket {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
    /// The port id the kernel gave this socket (the table's owner when it is owned).
    port_id: u32,
}

impl NftSocket {
    pub fn open() -> Result<NftSocket, NlError> {
        let (fd, port_id) = open_netfilter(
            "nf_tables",
            SOCKET_RCVBUF,
            Blocking::WithTimeout(REPLY_TIMEOUT),
        )?;
        Ok(NftSocket {
            fd,
            buf: vec![0; RECV_BUF],
            seq: 1,
            port_id,
        })
    }

    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// Reserves `count` sequence numbers and returns the first.
    pub fn take_seqs(&mut self, count: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(count);
        first
    }

    /// A fresh batch whose sequence numbers follow this socket's.
    pub fn batch(&mut self) -> Batch {
        Batch::new(self.take_seqs(0))
    }

    /// Sends the batch as one transaction and checks an ACK for every message. The kernel
    /// handles a batch within the send call, so every reply is queued when send returns.
    pub fn commit(&mut self, batch: &mut Batch) -> Result<(), NlError> {
        if batch.is_empty() {
            return Ok(());
        }
        let bytes = batch.finish();
        self.send(bytes, "send batch")?;
        let (_, next) = batch.seq_range();
        self.seq = next;
        let mut pending: Vec<u32> = batch.acked_seqs().collect();
        let mut failure: Option<NlError> = None;
        while !pending.is_empty() {
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
                pending.retain(|&s| s != reply.seq);
                if reply.code != 0 && failure.is_none() {
                    let what = batch.label(reply.seq).unwrap_or("batch").to_string();
                    failure = Some(NlError::kernel(
                        what,
                        reply.code.saturating_neg(),
                        reply.ext_msg,
                    ));
                }
            }
            if failure.is_some() {
                // The whole batch was rolled back; the remaining replies are of no use.
                self.drain();
                break;
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends one request (a dump, or a get with NLM_F_ACK) and passes each reply message to
    /// `on_msg` until the dump is done or the request is acknowledged.
    pub fn request(
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
pub fn send_to_kernel(fd: &OwnedFd, bytes: &[u8], op: &'static str) -> Result<(), NlError> {
    // SAFETY: an all-zero sockaddr_nl addresses the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: sendto on our descriptor with a valid buffer and address.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr() as *const libc::c_void,
            bytes.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(NlError::Io {
            op,
            source: io::Error::last_os_error(),
        });
    }
    if rc as usize != bytes.len() {
        return Err(NlError::Malformed(format!(
            "{op}: short send of {rc} of {} bytes",
            bytes.len()
        )));
    }
    Ok(())
}

/// One recv(2) into `buf` with `flags`; the length the kernel reports (with MSG_TRUNC, the
/// datagram's real length, which may exceed the buffer).
pub fn recv_into(fd: &OwnedFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: recv into our own buffer of the given length.
    let rc = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            flags,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// How a netfilter socket waits for replies.
#[derive(Debug, Clone, Copy)]
pub enum Blocking {
    /// Blocking reads that give up after the timeout (request/response use).
    WithTimeout(Duration),
    /// Non-blocking, for registration with mio.
    No,
}

/// Opens and binds a NETLINK_NETFILTER socket: extended and capped ACKs, a receive buffer of
/// `rcvbuf` bytes (SO_RCVBUFFORCE where we may, else SO_RCVBUF, capped by rmem_max). Returns
/// the descriptor and the port id the kernel gave it. `what` names it in errors.
pub fn open_netfilter(
    what: &'static str,
    rcvbuf: usize,
    blocking: Blocking,
) -> Result<(OwnedFd, u32), NlError> {
    let mut flags = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
    if let Blocking::No = blocking {
        flags |= libc::SOCK_NONBLOCK;
    }
    let fail = |source| NlError::Io { op: what, source };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, flags, libc::NETLINK_NETFILTER) };
    if raw < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_nl is valid (port id 0: the kernel assigns one); bind and
    // getsockname get a correctly sized address.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let addr_ptr = &mut addr as *mut libc::sockaddr_nl as *mut libc::sockaddr;
    if unsafe { libc::bind(raw, addr_ptr, len) } < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    unsafe { libc::getsockname(raw, addr_ptr, &mut len) };
    let one: libc::c_int = 1;
    for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
        set_opt(raw, libc::SOL_NETLINK, opt, &one);
    }
    let rcvbuf = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
    if !set_opt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf) {
        set_opt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf);
    }
    if let Blocking::WithTimeout(t) = blocking {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        if !set_opt(raw, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv) {
            return Err(fail(io::Error::last_os_error()));
        }
    }
    Ok((fd, addr.nl_pid))
}

fn set_opt<T>(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: &T) -> bool {
    // SAFETY: `value` points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    rc == 0
}
