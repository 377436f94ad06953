//! An incident's own packets (issue 14): of the recent sampled packets, those its driving
//! counters count — its protocol, TCP flag class, destination port, reflector source port,
//! fragments — toward its target. Who sent them (sources, /24 and /64 prefixes, distinct
//! sources) and what they hit (local addresses, or the prefix a flood spreads over) come from
//! these alone, so each incident of a multi-vector attack names — and gets banned — its own
//! senders, never another vector's.
//!
//! Counted exactly: the addresses are copied into reusable scratch space and sorted (a few
//! thousand at most, only when an incident reports), so a run of equal addresses is one
//! source and a run of equal /24s one prefix.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::classify::Target;
use super::incident::Incident;
use super::{Detector, Role, Sample, MIN_SAMPLES, TOP};
use crate::addr::Cidr;
use crate::config::Proto;
use crate::netlink::nflog::PacketMeta;
use crate::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use crate::sense::counters::class;

/// Targets an incident lists. A /24 (/64) with more hit addresses than this is named whole.
pub(crate) const TARGETS: usize = 4;
/// Listed sources and targets carry at least this share of the incident's packets.
const MIN_SHARE: f64 = 0.01;
/// The top sources (up to [`TOP`]) carry at least this share: concentrated.
const CONCENTRATED: f64 = 0.5;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Which sampled packets a key counts: the table's accounting rules, on parsed headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counts {
    /// IPv4 (false) or IPv6 (true).
    Family(bool),
    Proto(u8),
    /// TCP with `flags & mask == value`.
    Flags {
        mask: u8,
        value: u8,
    },
    Fragments,
    /// TCP or UDP to no service port (UDP: nor from a reflector port).
    Other,
    /// `proto` to a port in `first..=last` (a service's packets, new or held connections).
    Ports {
        proto: u8,
        first: u16,
        last: u16,
    },
    /// UDP from a reflector's source port.
    Reflector(u16),
    /// IP protocols other than TCP, UDP, ICMP and ICMPv6.
    UnlistedProto,
}

/// What a fixed class counts (`None` for an index that is no class).
pub(super) fn class_counts(c: usize) -> Option<Counts> {
    Some(match c {
        class::IPV4 => Counts::Family(false),
        class::IPV6 => Counts::Family(true),
        class::TCP => Counts::Proto(IPPROTO_TCP),
        class::UDP => Counts::Proto(IPPROTO_UDP),
        class::ICMP => Counts::Proto(IPPROTO_ICMP),
        class::ICMPV6 => Counts::Proto(IPPROTO_ICMPV6),
        class::TCP_SYN => Counts::Flags {
            mask: SYN | ACK,
            value: SYN,
        },
        class::TCP_RST => Counts::Flags {
            mask: SYN | RST,
            value: RST,
        },
        class::TCP_ACK => Counts::Flags {
            mask: FIN | SYN | RST | ACK,
            value: ACK,
        },
        class::FRAGMENT => Counts::Fragments,
        class::OTHER => Counts::Other,
        // ACK-only packets in established connections: a sample cannot tell, so all ACK-only.
        class::TCP_ACK_EST => Counts::Flags {
            mask: FIN | SYN | RST | ACK,
            value: ACK,
        },
        class::TCP_SYNACK => Counts::Flags {
            mask: SYN | ACK,
            value: SYN | ACK,
        },
        class::TCP_ODD => Counts::Flags {
            mask: SYN | RST | ACK,
            value: 0,
        },
        class::L4_OTHER => Counts::UnlistedProto,
        _ => return None,
    })
}

fn proto_number(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => IPPROTO_TCP,
        Proto::Udp => IPPROTO_UDP,
    }
}

/// Reusable space for sorting addresses (grows to the largest window once, then stays).
#[derive(Debug, Default)]
pub(super) struct Scratch {
    v4: Vec<u32>,
    v6: Vec<u128>,
}

impl Scratch {
    pub(crate) fn with_capacity(n: usize) -> Scratch {
        Scratch {
            v4: Vec::with_capacity(n),
            v6: Vec::with_capacity(n),
        }
    }

    /// Fills with `addrs`, sorted; returns how many.
    fn fill(&mut self, addrs: impl Iterator<Item = IpAddr>) -> usize {
        self.v4.clear();
        self.v6.clear();
        for a in addrs {
            match a {
                IpAddr::V4(a) => self.v4.push(u32::from(a)),
                IpAddr::V6(a) => self.v6.push(u128::from(a)),
            }
        }
        self.v4.sort_unstable();
        self.v6.sort_unstable();
        self.v4.len() + self.v6.len()
    }
}

/// An address family's bits.
trait Bits: Copy + Eq {
    const WIDTH: u8;
    /// The prefix sources and targets are grouped by: /24, /64.
    const GROUP: u8;
    fn net(self, len: u8) -> Self;
    /// Leading bits `self` and `other` share.
    fn common(self, other: Self) -> u8;
    fn ip(self) -> IpAddr;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    const GROUP: u8 = 24;
    fn net(self, len: u8) -> u32 {
        self & u32::MAX.checked_shl(u32::from(32 - len)).unwrap_or(0)
    }
    fn common(self, other: u32) -> u8 {
        (self ^ other).leading_zeros() as u8
    }
    fn ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    const GROUP: u8 = 64;
    fn net(self, len: u8) -> u128 {
        self & u128::MAX.checked_shl(u32::from(128 - len)).unwrap_or(0)
    }
    fn common(self, other: u128) -> u8 {
        (self ^ other).leading_zeros() as u8
    }
    fn ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }
}

fn cidr<B: Bits>(bits: B, len: u8) -> Cidr {
    let net = bits.net(len).ip();
    Cidr::new(net, len).unwrap_or(Cidr::host(net))
}

/// Keeps `list[..*n]` the heaviest seen so far, heaviest first.
fn heaviest<T: Copy>(list: &mut [(T, u64)], n: &mut usize, item: (T, u64)) {
    let mut i = *n;
    while i > 0 && list[i - 1].1 < item.1 {
        i -= 1;
    }
    if i >= list.len() {
        return;
    }
    let last = (*n).min(list.len() - 1);
    list.copy_within(i..last, i + 1);
    list[i] = item;
    *n = (*n + 1).min(list.len());
}

/// Heaviest sources and prefixes of one family's sorted addresses; returns distinct sources.
fn tally_sources<B: Bits>(
    sorted: &[B],
    sources: &mut ([(IpAddr, u64); TOP], usize),
    prefixes: &mut ([(Cidr, u64); TOP], usize),
) -> usize {
    let mut distinct = 0;
    for run in sorted.chunk_by(|a, b| a == b) {
        distinct += 1;
        heaviest(
            &mut sources.0,
            &mut sources.1,
            (run[0].ip(), run.len() as u64),
        );
    }
    for run in sorted.chunk_by(|a, b| a.net(B::GROUP) == b.net(B::GROUP)) {
        let item = (cidr(run[0], B::GROUP), run.len() as u64);
        heaviest(&mut prefixes.0, &mut prefixes.1, item);
    }
    distinct
}

/// Heaviest targets of one family's sorted addresses: each address, or — when a /24 (/64)
/// holds more hit addresses than a list shows — the smallest prefix covering them.
fn tally_targets<B: Bits>(sorted: &[B], targets: &mut ([(Cidr, u64); TARGETS], usize)) {
    for group in sorted.chunk_by(|a, b| a.net(B::GROUP) == b.net(B::GROUP)) {
        let hosts = group.chunk_by(|a, b| a == b);
        if hosts.clone().count() > TARGETS {
            let (first, last) = (group[0], group[group.len() - 1]);
            let item = (cidr(first, first.common(last)), group.len() as u64);
            heaviest(&mut targets.0, &mut targets.1, item);
        } else {
            for run in hosts {
                let item = (cidr(run[0], B::WIDTH), run.len() as u64);
                heaviest(&mut targets.0, &mut targets.1, item);
            }
        }
    }
}

impl Detector {
    /// Whether `p` is one of `incident`'s own packets: counted by one of its drivers, of its
    /// transport, toward its target.
    fn own(&self, incident: &Incident, p: &PacketMeta) -> bool {
        let transport = match incident.vector.proto() {
            Some("tcp") => Some(IPPROTO_TCP),
            Some("udp") => Some(IPPROTO_UDP),
            _ => None,
        };
        if transport.is_some_and(|t| t != p.proto) {
            return false;
        }
        let to_target = match incident.target {
            Target::Any => true,
            Target::Port(port) => p.dst_port == Some(port),
            Target::Service(s) => self.services.get(s).is_some_and(|svc| {
                p.proto == proto_number(svc.proto)
                    && p.dst_port
                        .is_some_and(|d| (svc.first..=svc.last).contains(&d))
            }),
        };
        to_target
            && incident
                .drivers
                .iter()
                .any(|&d| self.counts(self.keys[d].counts, p))
    }

    fn counts(&self, counts: Option<Counts>, p: &PacketMeta) -> bool {
        let Some(counts) = counts else {
            return false;
        };
        match counts {
            Counts::Family(v6) => p.src.is_ipv6() == v6,
            Counts::Proto(proto) => p.proto == proto,
            Counts::Flags { mask, value } => {
                p.proto == IPPROTO_TCP && p.tcp_flags.is_some_and(|f| f & mask == value)
            }
            Counts::Fragments => p.fragment,
            Counts::UnlistedProto => !matches!(
                p.proto,
                IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP | IPPROTO_ICMPV6
            ),
            Counts::Other => {
                let Some(port) = p.dst_port else {
                    return false;
                };
                let to_service = self.services.iter().any(|s| {
                    proto_number(s.proto) == p.proto && (s.first..=s.last).contains(&port)
                });
                let reflected = p.proto == IPPROTO_UDP
                    && self
                        .keys
                        .iter()
                        .any(|k| matches!(k.role, Role::Amp(a) if Some(a) == p.src_port));
                matches!(p.proto, IPPROTO_TCP | IPPROTO_UDP) && !to_service && !reflected
            }
            Counts::Ports { proto, first, last } => {
                p.proto == proto && p.dst_port.is_some_and(|d| (first..=last).contains(&d))
            }
            Counts::Reflector(port) => p.proto == IPPROTO_UDP && p.src_port == Some(port),
        }
    }

    /// Incident `i`'s targets and — unless `sources` is false (connection counts name those)
    /// — its sources, prefixes and distinct sources, from its own recent packets. With fewer
    /// than `MIN_SAMPLES` of them, the last view stays.
    pub(super) fn count_own(&mut self, i: usize, sample: &Sample, sources: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let incident = &self.incidents[i];
        let own = sample.packets.iter().filter(|p| self.own(incident, p));
        let n = scratch.fill(own.map(|p| p.dst));
        if (n as u64) < MIN_SAMPLES {
            self.scratch = scratch;
            return;
        }
        let mut targets = (
            [(Cidr::host(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0); TARGETS],
            0,
        );
        tally_targets(&scratch.v4, &mut targets);
        tally_targets(&scratch.v6, &mut targets);
        let mut top = ([(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0); TOP], 0);
        let mut prefixes = ([(Cidr::host(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0); TOP], 0);
        let mut distinct = 0;
        if sources {
            let own = sample.packets.iter().filter(|p| self.own(incident, p));
            scratch.fill(own.map(|p| p.src));
            distinct = tally_sources(&scratch.v4, &mut top, &mut prefixes)
                + tally_sources(&scratch.v6, &mut top, &mut prefixes);
        }
        self.scratch = scratch;
        let total = n as f64;
        let share = |count: u64| count as f64 / total;
        let incident = &mut self.incidents[i];
        incident.set_targets(
            targets.0[..targets.1]
                .iter()
                .map(|&(c, count)| (c, share(count)))
                .filter(|t| t.1 >= MIN_SHARE),
        );
        if !sources {
            return;
        }
        let carried: u64 = top.0[..top.1].iter().map(|s| s.1).sum();
        let concentrated = share(carried) >= CONCENTRATED;
        let listed = top.0[..top.1]
            .iter()
            .map(|&(a, count)| (a, share(count)))
            .filter(|s| concentrated && s.1 >= MIN_SHARE);
        incident.set_sources(listed, concentrated);
        incident.set_prefixes(
            prefixes.0[..prefixes.1]
                .iter()
                .map(|&(c, count)| (c, share(count))),
        );
        incident.distinct_sources = distinct as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_class_says_what_it_counts() {
        for c in 0..=class::L4_OTHER {
            assert!(class_counts(c).is_some(), "class {c}");
        }
    }

    #[test]
    fn heaviest_keeps_the_top_in_order() {
        let mut list = [(0u8, 0u64); 3];
        let mut n = 0;
        for (k, c) in [(1, 5), (2, 9), (3, 1), (4, 7), (5, 9), (6, 2)] {
            heaviest(&mut list, &mut n, (k, c));
        }
        assert_eq!((n, list), (3, [(2, 9), (5, 9), (4, 7)]));
    }

    #[test]
    fn targets_a_few_addresses_or_the_prefix_they_spread_over() {
        let mut t = (
            [(Cidr::host(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0); TARGETS],
            0,
        );
        // 16 addresses of 10.250.0.16/28, 4 packets each; 30 packets to 10.250.9.9.
        let mut v: Vec<u32> = (0..64).map(|i| 0x0afa_0010 + i % 16).collect();
        v.extend([0x0afa_0909; 30]);
        v.sort_unstable();
        tally_targets(&v, &mut t);
        let shown: Vec<(String, u64)> = t.0[..t.1]
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect();
        assert_eq!(
            shown,
            [
                ("10.250.0.16/28".to_string(), 64),
                ("10.250.9.9".to_string(), 30)
            ]
        );
        // IPv6: 5 hosts of one /64 spread over it.
        let mut t = (
            [(Cidr::host(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0); TARGETS],
            0,
        );
        let base = 0xfd00_0250_0000_0000_0000_0000_0000_0000u128;
        let v6: Vec<u128> = [1u128, 2, 0x8000, 1 << 40, 1 << 63]
            .map(|h| base | h)
            .to_vec();
        tally_targets(&v6, &mut t);
        assert_eq!(
            (t.1, t.0[0].0.to_string()),
            (1, "fd00:250::/64".to_string())
        );
    }
}
