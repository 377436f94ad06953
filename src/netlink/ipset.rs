//! ipset over netlink (the nfnetlink IPSET subsystem): creating and destroying our sets and
//! adding and deleting elements with per-element timeouts, many messages per send with every
//! ACK checked. Used by the iptables compatibility chain, which matches these sets.

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::nft::abi::NFPROTO_UNSPEC;
use super::socket::{open_netfilter, recv_into, send_to_kernel, Blocking};
use super::wire::{Msg, Msgs, Writer, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
use super::NlError;
use crate::addr::Cidr;
use crate::ruleset::expr::{NFPROTO_IPV4, NFPROTO_IPV6};
use crate::ruleset::shim::{IpsetSpec, SetType, MAX_TIMEOUT_SECS};

const NFNL_SUBSYS_IPSET: u16 = 6;
const PROTOCOL: u8 = 7;
const NLA_F_NET_BYTEORDER: u16 = 0x4000;

const CMD_CREATE: u16 = 2;
const CMD_DESTROY: u16 = 3;
const CMD_FLUSH: u16 = 4;
const CMD_ADD: u16 = 9;
const CMD_DEL: u16 = 10;
const CMD_TYPE: u16 = 13;

const ATTR_PROTOCOL: u16 = 1;
const ATTR_SETNAME: u16 = 2;
const ATTR_TYPENAME: u16 = 3;
const ATTR_REVISION: u16 = 4;
const ATTR_FAMILY: u16 = 5;
const ATTR_DATA: u16 = 7;

const DATA_IP: u16 = 1;
const DATA_CIDR: u16 = 3;
const DATA_TIMEOUT: u16 = 6;
const DATA_MAXELEM: u16 = 19;
const DATA_SIZE: u16 = 23;
const DATA_NAME: u16 = 18;
const IPADDR_IPV4: u16 = 1;
const IPADDR_IPV6: u16 = 2;

/// ipset's own error numbers (above 4096), in words.
const IPSET_ERR_PROTOCOL: i32 = 4097;
const IPSET_ERR_FIND_TYPE: i32 = 4098;
const IPSET_ERR_BUSY: i32 = 4100;
const IPSET_ERR_EXIST: i32 = 4103;
const IPSET_ERR_TIMEOUT: i32 = 4107;
const IPSET_ERR_REFERENCED: i32 = 4108;
const IPSET_ERR_TYPE_SPECIFIC: i32 = 4352;

/// Elements a send carries at most (each ~60 bytes; the kernel takes a datagram at a time).
const PER_SEND: usize = 512;
const RECV_BUF: usize = 64 * 1024;
/// The socket's receive buffer: room for the ACKs of a whole send at once (each costs the
/// buffer about 1 KiB; a short buffer loses them, ENOBUFS).
const SOCKET_RCVBUF: usize = PER_SEND * 1024;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Our ipset socket: one descriptor, one request buffer, one receive buffer.
#[derive(Debug)]
pub(crate) struct Ipset {
    fd: OwnedFd,
    out: Writer,
    buf: Vec<u8>,
    seq: u32,
}

/// One element operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ElementOp {
    /// Add, or refresh the timeout of an element already there.
    Add {
        cidr: Cidr,
        timeout_secs: Option<u32>,
    },
    /// Delete; an element that is not there is no error.
    Del { cidr: Cidr },
}

impl Ipset {
    pub(crate) fn open() -> Result<Ipset, NlError> {
        let (fd, _) = open_netfilter(
            "ipset socket",
            SOCKET_RCVBUF,
            Blocking::WithTimeout(REPLY_TIMEOUT),
        )?;
        Ok(Ipset {
            fd,
            out: Writer::new(),
            buf: vec![0; RECV_BUF],
            seq: 1,
        })
    }

    /// Creates the set, or keeps it when one of the same name, type and options exists.
    /// One of that name but other options is destroyed and created anew (it fails while an
    /// iptables rule still uses it).
    pub(crate) fn ensure(&mut self, spec: &IpsetSpec) -> Result<(), NlError> {
        let revision = self.revision(spec)?;
        match self.create(spec, revision) {
            Err(e) if e.errno() == Some(IPSET_ERR_EXIST) => {
                self.one(
                    CMD_DESTROY,
                    0,
                    spec.name,
                    &format!("destroy ipset {} (other options)", spec.name),
                )?;
                self.create(spec, revision)
            }
            other => other,
        }?;
        for member in spec.members {
            self.begin(CMD_ADD, NLM_F_ACK);
            self.out.attr_str(ATTR_SETNAME, spec.name);
            let data = self.out.nest_start(ATTR_DATA);
            self.out.attr_str(DATA_NAME, member);
            self.close(data)?;
            let seq = self.seq;
            self.exchange(&[(seq, format!("add {member} to ipset {}", spec.name))])?;
        }
        Ok(())
    }

    /// Destroys the set; true if it was there.
    pub(crate) fn destroy(&mut self, name: &str) -> Result<bool, NlError> {
        // NLM_F_EXCL: a missing set is reported (ENOENT) rather than ignored.
        match self.one(
            CMD_DESTROY,
            NLM_F_EXCL,
            name,
            &format!("destroy ipset {name}"),
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Empties the set.
    pub(crate) fn flush(&mut self, name: &str) -> Result<(), NlError> {
        self.one(CMD_FLUSH, 0, name, &format!("flush ipset {name}"))
    }

    /// Adds and deletes elements of `set`, many to a send, checking every ACK. The first
    /// refusal is returned after the rest of that send was answered.
    pub(crate) fn apply(&mut self, set: &str, ops: &[ElementOp]) -> Result<(), NlError> {
        let mut labels = Vec::with_capacity(ops.len().min(PER_SEND));
        for chunk in ops.chunks(PER_SEND) {
            self.out.clear();
            labels.clear();
            for op in chunk {
                let (cmd, cidr, timeout) = match *op {
                    ElementOp::Add { cidr, timeout_secs } => (CMD_ADD, cidr, timeout_secs),
                    ElementOp::Del { cidr } => (CMD_DEL, cidr, None),
                };
                self.message(cmd, NLM_F_ACK);
                self.out.attr_str(ATTR_SETNAME, set);
                let data = self.out.nest_start(ATTR_DATA);
                let ip = self.out.nest_start(DATA_IP);
                match cidr.addr() {
                    IpAddr::V4(a) => self
                        .out
                        .attr(IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &a.octets()),
                    IpAddr::V6(a) => self
                        .out
                        .attr(IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &a.octets()),
                }
                self.out
                    .nest_end(ip)
                    .map_err(|e| NlError::Malformed(e.to_string()))?;
                if !cidr.is_host() {
                    self.out.attr(DATA_CIDR, &[cidr.prefix_len()]);
                }
                if let Some(t) = timeout {
                    self.out
                        .attr_be32(DATA_TIMEOUT | NLA_F_NET_BYTEORDER, t.min(MAX_TIMEOUT_SECS));
                }
                self.out
                    .nest_end(data)
                    .map_err(|e| NlError::Malformed(e.to_string()))?;
                let verb = if cmd == CMD_ADD { "add" } else { "delete" };
                labels.push((self.seq, format!("{verb} {cidr} in ipset {set}")));
            }
            self.out.end();
            self.exchange(&labels)?;
        }
        Ok(())
    }

    /// The newest revision of the set type the kernel has.
    fn revision(&mut self, spec: &IpsetSpec) -> Result<u8, NlError> {
        self.begin(CMD_TYPE, NLM_F_ACK);
        self.out.attr_str(ATTR_TYPENAME, spec.kind.name());
        self.out.attr(ATTR_FAMILY, &[family(spec)]);
        self.out.end();
        let what = format!(
            "ipset type {} (is the ip_set module available?)",
            spec.kind.name()
        );
        let mut revision = None;
        self.query(&what, &mut |msg| {
            revision = msg
                .nf_attrs()
                .get(ATTR_REVISION)
                .and_then(|a| a.bytes().first().copied());
        })?;
        revision.ok_or_else(|| NlError::Malformed(format!("{what}: no revision in the reply")))
    }

    /// Sends the one request written and passes each reply message to `on_msg` until the
    /// request is acknowledged or its dump is done.
    fn query(&mut self, what: &str, on_msg: &mut dyn FnMut(&Msg)) -> Result<(), NlError> {
        send_to_kernel(&self.fd, self.out.bytes(), "send ipset request")?;
        let seq = self.seq;
        loop {
            let n = self.recv()?;
            for msg in Msgs::new(&self.buf[..n]) {
                let msg = msg.map_err(|e| NlError::Malformed(e.to_string()))?;
                if msg.seq() != seq {
                    continue;
                }
                match super::reply_end(&msg, what) {
                    Some(end) => return end,
                    None => on_msg(&msg),
                }
            }
        }
    }

    fn create(&mut self, spec: &IpsetSpec, revision: u8) -> Result<(), NlError> {
        self.begin(CMD_CREATE, NLM_F_CREATE | NLM_F_ACK);
        self.out.attr_str(ATTR_SETNAME, spec.name);
        self.out.attr_str(ATTR_TYPENAME, spec.kind.name());
        self.out.attr(ATTR_REVISION, &[revision]);
        self.out.attr(ATTR_FAMILY, &[family(spec)]);
        let data = self.out.nest_start(ATTR_DATA);
        if let Some(t) = spec.timeout {
            self.out
                .attr_be32(DATA_TIMEOUT | NLA_F_NET_BYTEORDER, t.min(MAX_TIMEOUT_SECS));
        }
        let size_attr = match spec.kind {
            SetType::ListSet => DATA_SIZE,
            SetType::HashIp | SetType::HashNet => DATA_MAXELEM,
        };
        self.out
            .attr_be32(size_attr | NLA_F_NET_BYTEORDER, spec.size);
        self.close(data)?;
        let seq = self.seq;
        self.exchange(&[(
            seq,
            format!("create ipset {} ({})", spec.name, spec.kind.name()),
        )])
    }

    /// A single-set command (destroy, flush) acknowledged by the kernel.
    fn one(&mut self, cmd: u16, flags: u16, name: &str, what: &str) -> Result<(), NlError> {
        self.begin(cmd, flags | NLM_F_ACK);
        self.out.attr_str(ATTR_SETNAME, name);
        self.out.end();
        let seq = self.seq;
        self.exchange(&[(seq, what.to_string())])
    }

    /// Starts a fresh request of one message with the protocol attribute written.
    fn begin(&mut self, cmd: u16, flags: u16) {
        self.out.clear();
        self.message(cmd, flags);
    }

    /// Appends a message (with the next sequence number) and its protocol attribute.
    fn message(&mut self, cmd: u16, flags: u16) {
        self.seq = self.seq.wrapping_add(1);
        let kind = (NFNL_SUBSYS_IPSET << 8) | cmd;
        self.out.begin(kind, flags, self.seq, NFPROTO_IPV4, 0);
        self.out.attr(ATTR_PROTOCOL, &[PROTOCOL]);
    }

    fn close(&mut self, nest: usize) -> Result<(), NlError> {
        self.out
            .nest_end(nest)
            .map_err(|e| NlError::Malformed(e.to_string()))?;
        self.out.end();
        Ok(())
    }

    /// Sends what is written and waits for an ACK for each of `labels`' sequence numbers.
    fn exchange(&mut self, labels: &[(u32, String)]) -> Result<(), NlError> {
        send_to_kernel(&self.fd, self.out.bytes(), "send ipset request")?;
        let mut pending = labels.len();
        let mut failure = None;
        while pending > 0 {
            let n = self.recv()?;
            for msg in Msgs::new(&self.buf[..n]) {
                let msg = msg.map_err(|e| NlError::Malformed(e.to_string()))?;
                let Some(reply) = msg.error() else { continue };
                let Some((_, what)) = labels.iter().find(|(s, _)| *s == reply.seq) else {
                    continue;
                };
                pending -= 1;
                if reply.code != 0 && failure.is_none() {
                    let errno = reply.code.saturating_neg();
                    failure = Some(NlError::kernel(what.clone(), errno, reply.ext_msg));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn recv(&mut self) -> Result<usize, NlError> {
        loop {
            match recv_into(&self.fd, &mut self.buf, 0) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(NlError::Io {
                        op: "read ipset reply",
                        source,
                    })
                }
                Ok(n) => return Ok(n),
            }
        }
    }
}

fn family(spec: &IpsetSpec) -> u8 {
    match (spec.kind, spec.v6) {
        (SetType::ListSet, _) => NFPROTO_UNSPEC,
        (_, false) => NFPROTO_IPV4,
        (_, true) => NFPROTO_IPV6,
    }
}

/// ipset's own error numbers (4096 and up; the C library knows none of them) in words.
pub(super) fn reason(errno: i32) -> Option<&'static str> {
    Some(match errno {
        IPSET_ERR_PROTOCOL => "the kernel's ipset speaks another protocol version",
        IPSET_ERR_FIND_TYPE => "the kernel lacks this ipset type (module not available)",
        IPSET_ERR_BUSY | IPSET_ERR_REFERENCED => "the set is in use by an iptables rule",
        IPSET_ERR_EXIST => "a set of that name exists with other options",
        IPSET_ERR_TIMEOUT => "the set was created without timeout support",
        IPSET_ERR_TYPE_SPECIFIC => "the set is full (its maxelem is reached)",
        4096.. => "refused by ipset",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::testns::{is_root, Netns};

    const IP4: IpsetSpec = IpsetSpec {
        name: "t-ip4",
        kind: SetType::HashIp,
        v6: false,
        timeout: Some(600),
        size: 1024,
        members: &[],
    };
    const NET6: IpsetSpec = IpsetSpec {
        name: "t-net6",
        kind: SetType::HashNet,
        v6: true,
        timeout: Some(600),
        size: 1024,
        members: &[],
    };
    const LIST: IpsetSpec = IpsetSpec {
        name: "t-all",
        kind: SetType::ListSet,
        v6: false,
        timeout: None,
        size: 8,
        members: &["t-ip4", "t-net6"],
    };

    fn ipset_list(ns: &Netns, set: &str) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "ipset", "list", set])
            .output()
            .expect("run ipset");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Issue 15: sets filled to their size (65,536 addresses each family), every ACK read.
    #[test]
    fn issue15_full_sets_are_filled_with_every_ack_read() {
        if !is_root() {
            eprintln!("skipped: needs root for a network namespace");
            return;
        }
        let ns = Netns::create("ipsetfull").expect("namespace");
        let size = 65_536u32;
        ns.run(move || {
            let mut ipset = Ipset::open().expect("ipset socket");
            for (name, v6) in [("t-full4", false), ("t-full6", true)] {
                ipset
                    .ensure(&IpsetSpec {
                        name,
                        v6,
                        size,
                        ..IP4
                    })
                    .expect("create");
                let ops: Vec<ElementOp> = (0..size)
                    .map(|i| {
                        let addr: IpAddr = if v6 {
                            std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)).into()
                        } else {
                            std::net::Ipv4Addr::from(0xc612_0000 + i).into()
                        };
                        ElementOp::Add {
                            cidr: Cidr::host(addr),
                            timeout_secs: Some(600),
                        }
                    })
                    .collect();
                ipset.apply(name, &ops).expect("fill");
            }
        });
        for set in ["t-full4", "t-full6"] {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &ns.name, "ipset", "list", "-t", set])
                .output()
                .expect("run ipset");
            let listed = String::from_utf8_lossy(&out.stdout);
            assert!(
                listed.contains(&format!("Number of entries: {size}\n")),
                "{listed}"
            );
        }
    }

    #[test]
    fn sets_and_timed_elements_round_trip_through_the_kernel() {
        if !is_root() {
            eprintln!("skipped: needs root for a network namespace");
            return;
        }
        let ns = Netns::create("ipset").expect("namespace");
        ns.run(|| {
            let mut ipset = Ipset::open().expect("ipset socket");
            for spec in [&IP4, &NET6, &LIST] {
                ipset.ensure(spec).expect("create");
                ipset.ensure(spec).expect("create again: kept");
            }
            let a: Cidr = "10.250.0.1/32".parse().unwrap();
            let n: Cidr = "fd00:250::/64".parse().unwrap();
            ipset
                .apply(
                    "t-ip4",
                    &[ElementOp::Add {
                        cidr: a,
                        timeout_secs: Some(30),
                    }],
                )
                .expect("add v4");
            ipset
                .apply(
                    "t-net6",
                    &[
                        ElementOp::Add {
                            cidr: n,
                            timeout_secs: Some(40),
                        },
                        ElementOp::Add {
                            cidr: n,
                            timeout_secs: Some(50),
                        },
                        ElementOp::Del {
                            cidr: "fd00:251::/64".parse().unwrap(),
                        },
                    ],
                )
                .expect("add v6, refresh, delete a missing one");
            let wrong = ipset.apply(
                "t-ip4",
                &[ElementOp::Add {
                    cidr: n,
                    timeout_secs: None,
                }],
            );
            assert!(
                wrong.is_err(),
                "a v6 prefix in a v4 hash:ip must be refused"
            );
            let missing = ipset
                .apply("t-none", &[ElementOp::Del { cidr: a }])
                .unwrap_err();
            assert!(missing.to_string().contains("t-none"), "{missing}");
        });
        for set in ["t-ip4", "t-net6"] {
            let listed = ipset_list(&ns, set);
            assert!(listed.contains("Number of entries: 1\n"), "{listed}");
        }
        assert_eq!(ipset_list(&ns, "t-nothing"), "", "no such set");
        let v4 = ipset_list(&ns, "t-ip4");
        assert!(v4.contains("10.250.0.1 timeout "), "{v4}");
        let v6 = ipset_list(&ns, "t-net6");
        let t: u32 = v6
            .lines()
            .find_map(|l| l.strip_prefix("fd00:250::/64 timeout "))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("{v6}"));
        assert!((41..=50).contains(&t), "refreshed to 50 s, got {t}: {v6}");
        let all = ipset_list(&ns, "t-all");
        assert!(all.contains("t-ip4") && all.contains("t-net6"), "{all}");
        ns.run(|| {
            let mut ipset = Ipset::open().unwrap();
            assert!(ipset.destroy("t-all").unwrap());
            assert!(ipset.destroy("t-ip4").unwrap());
            assert!(!ipset.destroy("t-ip4").unwrap());
        });
    }
}
