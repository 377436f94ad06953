//! Netlink wire format: a writer that appends nfnetlink messages and attributes to a reusable
//! buffer, and checked zero-copy views over received messages and attributes. Nothing here
//! touches a socket; every accessor is panic-free once a view has been built.

/// Netlink header length (struct nlmsghdr).
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// nfnetlink generic header length (struct nfgenmsg).
pub(crate) const NFGENMSG_LEN: usize = 4;
/// Attribute header length (struct nlattr).
pub(crate) const NLA_HDRLEN: usize = 4;
/// Flag marking an attribute as nested.
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
#[cfg(test)]
pub(crate) const NLM_F_MULTI: u16 = 0x2;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_EXCL: u16 = 0x200;

/// Rounds a length up to the 4-byte netlink alignment.
pub(crate) const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends netlink messages to a buffer. Attributes are written into the message opened last;
/// nested attributes are opened and closed explicitly (`nest_start`/`nest_end`).
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
    msg_start: Option<usize>,
}

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer::default()
    }

    /// Forgets everything written, keeping the allocation.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.msg_start = None;
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Drops everything after `len` bytes (to take back a partly written attribute).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Starts a message with an nfgenmsg header. `res_id` is written big-endian.
    pub(crate) fn begin(&mut self, msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.end();
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in end()
        self.buf.extend_from_slice(&msg_type.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.msg_start = Some(start);
    }

    /// Closes the open message, if any, writing its length.
    pub(crate) fn end(&mut self) {
        if let Some(start) = self.msg_start.take() {
            let len = (self.buf.len() - start) as u32;
            self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// Appends already-encoded whole messages (used to splice in other encoders' output).
    pub(crate) fn extend_raw(&mut self, bytes: &[u8]) {
        self.end();
        self.buf.extend_from_slice(bytes);
    }

    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = NLA_HDRLEN + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    pub(crate) fn attr_str(&mut self, kind: u16, value: &str) {
        let len = NLA_HDRLEN + value.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    pub(crate) fn attr_be32(&mut self, kind: u16, value: u32) {
        self.attr(kind, &value.to_be_bytes());
    }

    pub(crate) fn attr_be64(&mut self, kind: u16, value: u64) {
        self.attr(kind, &value.to_be_bytes());
    }

    /// Opens a nested attribute; returns the position to pass to `nest_end`.
    pub(crate) fn nest_start(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Closes a nested attribute. Fails when it grew past the 16-bit attribute length.
    pub(crate) fn nest_end(&mut self, start: usize) -> Result<(), WireError> {
        let len = self.buf.len() - start;
        let len = u16::try_from(len).map_err(|_| WireError::AttributeTooLong(len))?;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        Ok(())
    }

    fn pad(&mut self) {
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// What can be wrong with bytes that claim to be netlink.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("truncated netlink message: {0}")]
    Truncated(&'static str),
    #[error("nested attribute of {0} bytes exceeds the 65535-byte netlink limit")]
    AttributeTooLong(usize),
}

/// A checked view of one netlink message: the header is known to be complete and its length to
/// lie within the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'a> {
    bytes: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The whole message, header included.
    pub(crate) fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn kind(&self) -> u16 {
        u16::from_ne_bytes([self.bytes[4], self.bytes[5]])
    }

    pub(crate) fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.bytes[6], self.bytes[7]])
    }

    pub(crate) fn seq(&self) -> u32 {
        u32::from_ne_bytes([self.bytes[8], self.bytes[9], self.bytes[10], self.bytes[11]])
    }

    /// The sender's port id; in a notification, the port of the socket whose request caused it.
    pub(crate) fn port_id(&self) -> u32 {
        u32::from_ne_bytes([
            self.bytes[12],
            self.bytes[13],
            self.bytes[14],
            self.bytes[15],
        ])
    }

    /// The payload after the netlink header.
    pub(crate) fn payload(&self) -> &'a [u8] {
        &self.bytes[NLMSG_HDRLEN..]
    }

    /// For an nfnetlink message: the address family of the nfgenmsg header.
    pub(crate) fn nfgen_family(&self) -> Option<u8> {
        self.payload().first().copied()
    }

    /// For an nfnetlink message: the attributes after the nfgenmsg header.
    pub(crate) fn nf_attrs(&self) -> Attrs<'a> {
        Attrs::new(self.payload().get(NFGENMSG_LEN..).unwrap_or(&[]))
    }

    /// For an NLMSG_ERROR message: the error code (0 for an ACK, else a negative errno), the
    /// sequence number of the request it answers, and any extended-ACK message text.
    pub(crate) fn error(&self) -> Option<AckOrError<'a>> {
        if self.kind() != NLMSG_ERROR {
            return None;
        }
        let p = self.payload();
        let code = i32::from_ne_bytes(p.get(0..4)?.try_into().ok()?);
        let orig = p.get(4..4 + NLMSG_HDRLEN)?;
        let orig_len = u32::from_ne_bytes(orig[0..4].try_into().ok()?) as usize;
        let orig_seq = u32::from_ne_bytes(orig[8..12].try_into().ok()?);
        // With NETLINK_CAP_ACK the original message is cut to its header; otherwise it is whole.
        let capped = self.flags() & 0x100 != 0; // NLM_F_CAPPED
        let orig_total = if capped {
            NLMSG_HDRLEN
        } else {
            align(orig_len)
        };
        let tlvs = p.get(4 + orig_total..).unwrap_or(&[]);
        let mut ext_msg = None;
        for attr in Attrs::new(tlvs) {
            if attr.kind() == 1 {
                // NLMSGERR_ATTR_MSG
                ext_msg = attr.str();
            }
        }
        Some(AckOrError {
            code,
            seq: orig_seq,
            ext_msg,
        })
    }
}

/// The content of an NLMSG_ERROR message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckOrError<'a> {
    pub(crate) code: i32,
    pub(crate) seq: u32,
    pub(crate) ext_msg: Option<&'a str>,
}

/// Iterates over the messages of a received datagram. Stops (returning an error once) at a
/// header whose length does not fit.
pub(crate) struct Msgs<'a> {
    rest: &'a [u8],
}

impl<'a> Msgs<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Msgs<'a> {
        Msgs { rest: bytes }
    }
}

impl<'a> Iterator for Msgs<'a> {
    type Item = Result<Msg<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < NLMSG_HDRLEN {
            self.rest = &[];
            return Some(Err(WireError::Truncated("header")));
        }
        let len = u32::from_ne_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]]);
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(WireError::Truncated("message length")));
        }
        let msg = Msg {
            bytes: &self.rest[..len],
        };
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(Ok(msg))
    }
}

/// One attribute: its type (without the nested/byte-order flags) and payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'a> {
    kind: u16,
    payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub(crate) fn kind(&self) -> u16 {
        self.kind
    }

    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.payload
    }

    pub(crate) fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.payload)
    }

    pub(crate) fn be32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.payload.get(..4)?.try_into().ok()?))
    }

    pub(crate) fn be64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.payload.get(..8)?.try_into().ok()?))
    }

    /// A NUL-terminated (or unterminated) UTF-8 string.
    pub(crate) fn str(&self) -> Option<&'a str> {
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        std::str::from_utf8(&self.payload[..end]).ok()
    }
}

/// Iterates over a run of attributes; a malformed tail ends the iteration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Attrs<'a> {
        Attrs { rest: bytes }
    }

    /// The first attribute of the given type.
    pub(crate) fn get(self, kind: u16) -> Option<Attr<'a>> {
        self.into_iter().find(|a| a.kind == kind)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        if self.rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]) as usize;
        let kind = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let payload = &self.rest[NLA_HDRLEN..len];
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(Attr { kind, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_message_reads_back() {
        let mut w = Writer::new();
        w.begin(0x0a09, NLM_F_ACK, 7, 1, 0);
        w.attr_str(1, "ftagent");
        let nest = w.nest_start(9);
        w.attr_be32(1, 65536);
        w.nest_end(nest).unwrap();
        w.end();
        let msgs: Vec<_> = Msgs::new(w.bytes()).collect();
        assert_eq!(msgs.len(), 1);
        let m = msgs[0].as_ref().unwrap();
        assert_eq!(m.kind(), 0x0a09);
        assert_eq!(m.seq(), 7);
        assert_eq!(m.flags(), NLM_F_ACK | NLM_F_REQUEST);
        assert_eq!(m.nfgen_family(), Some(1));
        let attrs = m.nf_attrs();
        assert_eq!(attrs.get(1).and_then(|a| a.str()), Some("ftagent"));
        let size = attrs
            .get(9)
            .and_then(|a| a.nested().get(1))
            .and_then(|a| a.be32());
        assert_eq!(size, Some(65536));
    }

    #[test]
    fn truncated_input_never_panics() {
        let mut w = Writer::new();
        w.begin(1, 0, 1, 0, 0);
        w.attr_str(1, "abc");
        w.end();
        let bytes = w.bytes().to_vec();
        for cut in 0..bytes.len() {
            for m in Msgs::new(&bytes[..cut]).flatten() {
                let _ = m.nf_attrs().count();
                let _ = m.error();
            }
        }
        // A lying attribute length inside a valid message.
        let mut bad = bytes.clone();
        bad[20] = 0xff;
        let m = Msgs::new(&bad).next().unwrap().unwrap();
        assert_eq!(m.nf_attrs().count(), 0);
    }

    #[test]
    fn oversized_nest_is_refused() {
        let mut w = Writer::new();
        w.begin(1, 0, 1, 0, 0);
        let nest = w.nest_start(3);
        w.attr(1, &vec![0u8; 70_000]);
        assert_eq!(w.nest_end(nest), Err(WireError::AttributeTooLong(70_008)));
    }
}
