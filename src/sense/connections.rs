//! Concurrent connections toward our service ports, per source address and per port, summed
//! from one conntrack dump. Fixed capacity, allocated once: `begin` clears without freeing,
//! `add` never allocates, and sources beyond the capacity are counted as overflow.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::Cidr;
use crate::netlink::conntrack::abi::TCP_CONNTRACK_ESTABLISHED;
use crate::netlink::conntrack::Entry;
use crate::proto::{IPPROTO_TCP, IPPROTO_UDP};

/// A set of ports as a 65536-bit map.
#[derive(Clone)]
pub(crate) struct PortSet {
    bits: [u64; 1024],
}

impl PortSet {
    /// The union of inclusive ranges `(first, last)`; a reversed range counts as its reverse.
    pub(crate) fn from_ranges(ranges: &[(u16, u16)]) -> PortSet {
        let mut set = PortSet { bits: [0; 1024] };
        for &(a, b) in ranges {
            for port in a.min(b)..=a.max(b) {
                if let Some(word) = set.bits.get_mut(usize::from(port >> 6)) {
                    *word |= 1 << (port & 63);
                }
            }
        }
        set
    }

    pub(crate) fn contains(&self, port: u16) -> bool {
        self.bits
            .get(usize::from(port >> 6))
            .is_some_and(|w| w >> (port & 63) & 1 == 1)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }
}

/// One source address in the open-addressing table. A slot is in use when its generation is
/// the table's current one, so `begin` clears every slot at once.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    addr: [u8; 16],
    v6: bool,
    generation: u32,
    count: u32,
}

impl Slot {
    fn ip(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        } else {
            let [a, b, c, d, ..] = self.addr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
    }
}

fn key(ip: IpAddr) -> ([u8; 16], bool) {
    match ip {
        IpAddr::V4(v4) => {
            let mut addr = [0; 16];
            let [a, b, c, d] = v4.octets();
            addr[..4].copy_from_slice(&[a, b, c, d]);
            (addr, false)
        }
        IpAddr::V6(v6) => (v6.octets(), true),
    }
}

/// Connections per source and per service port, from the original tuple of each entry.
///
/// What is counted: entries whose original destination port is a service port, i.e. the
/// connection was opened toward it. TCP only when ESTABLISHED: a held connection is one whose
/// handshake completed. Half-open entries (SYN_SENT, SYN_RECV) are what a spoofed SYN flood
/// leaves behind, "from" addresses that never sent a packet, so they are never a reason to
/// limit or ban a source; closing states (FIN_WAIT…TIME_WAIT, CLOSE) are what a finished
/// burst of real connections leaves behind, and count for nothing either. UDP: every entry
/// (a flow, whatever its state). Other protocols
/// have no ports and are ignored. Connections this host opens *to* a remote service port
/// match as well: the caller should leave its own addresses out of any decision.
///
/// A clone is a spare with the same ports, own addresses and keys (for reads made elsewhere).
#[derive(Clone)]
pub(crate) struct ConnectionTable {
    tcp: Box<PortSet>,
    udp: Box<PortSet>,
    per_tcp_port: Box<[u32]>,
    per_udp_port: Box<[u32]>,
    slots: Box<[Slot]>,
    /// Indexes of the slots in use this round, in order of arrival (capacity reserved).
    used: Vec<u32>,
    capacity: usize,
    generation: u32,
    /// Keyed with random keys: sources are chosen by whoever connects, so a fixed hash
    /// could be flooded with colliding addresses.
    hasher: RandomState,
    counted: u64,
    overflowed: u64,
    /// This host's own addresses: its own connections are not a remote source's.
    own: Vec<IpAddr>,
    /// Banned sources (addresses, and prefixes): the ban drops their packets before conntrack,
    /// FINs included, so their entries stay ESTABLISHED until conntrack's timeout — held by
    /// nobody (issue 14: a banned HTTP flood's 400 connections were a Slowloris afterwards).
    banned: HashSet<IpAddr>,
    banned_nets: Vec<Cidr>,
}

impl ConnectionTable {
    /// Ports are inclusive ranges; `capacity` is the most sources tracked per round (at least
    /// one), with twice as many slots so probes stay short.
    pub(crate) fn new(
        tcp_ports: &[(u16, u16)],
        udp_ports: &[(u16, u16)],
        capacity: usize,
    ) -> ConnectionTable {
        let capacity = capacity.clamp(1, u32::MAX as usize / 4);
        let slots = (capacity * 2).next_power_of_two();
        ConnectionTable {
            tcp: Box::new(PortSet::from_ranges(tcp_ports)),
            udp: Box::new(PortSet::from_ranges(udp_ports)),
            per_tcp_port: vec![0; 1 << 16].into_boxed_slice(),
            per_udp_port: vec![0; 1 << 16].into_boxed_slice(),
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            used: Vec::with_capacity(capacity),
            capacity,
            generation: 1,
            hasher: RandomState::new(),
            counted: 0,
            overflowed: 0,
            own: Vec::new(),
            banned: HashSet::new(),
            banned_nets: Vec::new(),
        }
    }

    /// Connections from these banned addresses and prefixes are not counted (until the next
    /// call). Keeps its allocations between calls.
    pub(crate) fn set_banned(&mut self, bans: impl Iterator<Item = Cidr>) {
        self.banned.clear();
        self.banned_nets.clear();
        for cidr in bans {
            if cidr.is_host() {
                self.banned.insert(cidr.addr());
            } else {
                self.banned_nets.push(cidr);
            }
        }
    }

    /// Connections from these addresses (this host's own) are not counted.
    pub(crate) fn set_own_addresses(&mut self, own: Vec<IpAddr>) {
        self.own = own;
    }

    /// Starts a new round (one dump): forgets all counts, keeping every allocation.
    pub(crate) fn begin(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Once in 2^32 rounds: old generations could look current again.
            self.slots.fill(Slot::default());
            self.generation = 1;
        }
        self.used.clear();
        for (set, counts) in [
            (&self.tcp, &mut self.per_tcp_port),
            (&self.udp, &mut self.per_udp_port),
        ] {
            // Only service ports are ever counted: clear their 64-port blocks.
            for (word, block) in set.bits.iter().zip(counts.chunks_mut(64)) {
                if *word != 0 {
                    block.fill(0);
                }
            }
        }
        self.counted = 0;
        self.overflowed = 0;
    }

    /// Counts one conntrack entry if it is a connection to a service port (see the type's
    /// documentation for what counts). True when the entry is a banned source's: stale, to be
    /// deleted.
    pub(crate) fn add(&mut self, e: &Entry) -> bool {
        if self.banned.contains(&e.src) || self.banned_nets.iter().any(|n| n.contains(e.src)) {
            return true;
        }
        let Some(port) = e.dst_port else {
            return false;
        };
        if self.own.contains(&e.src) {
            return false;
        }
        let per_port = match e.proto {
            IPPROTO_TCP
                if self.tcp.contains(port) && e.tcp_state == Some(TCP_CONNTRACK_ESTABLISHED) =>
            {
                &mut self.per_tcp_port
            }
            IPPROTO_UDP if self.udp.contains(port) => &mut self.per_udp_port,
            _ => return false,
        };
        if let Some(n) = per_port.get_mut(usize::from(port)) {
            *n = n.saturating_add(1);
        }
        self.counted += 1;
        match self.slot_for(e.src) {
            Some(slot) => slot.count = slot.count.saturating_add(1),
            None => self.overflowed += 1,
        }
        false
    }

    /// The slot of `ip`, taken if it is new; None when the table is full.
    fn slot_for(&mut self, ip: IpAddr) -> Option<&mut Slot> {
        let (addr, v6) = key(ip);
        let mut h = self.hasher.build_hasher();
        h.write(&addr);
        h.write_u8(u8::from(v6));
        let mask = self.slots.len() - 1;
        let mut i = h.finish() as usize & mask;
        // At most half the slots are in use, so an empty one comes before a full circle.
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(i)?;
            if slot.generation != self.generation {
                if self.used.len() >= self.capacity {
                    return None;
                }
                self.used.push(i as u32);
                let slot = self.slots.get_mut(i)?;
                *slot = Slot {
                    addr,
                    v6,
                    generation: self.generation,
                    count: 0,
                };
                return Some(slot);
            }
            if slot.addr == addr && slot.v6 == v6 {
                return self.slots.get_mut(i);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Fills `out` with the sources holding the most connections, heaviest first (ties in
    /// order of arrival); returns how many it wrote.
    pub(crate) fn top_sources(&self, out: &mut [(IpAddr, u32)]) -> usize {
        let mut n = 0;
        for &i in &self.used {
            let Some(slot) = self.slots.get(i as usize) else {
                continue;
            };
            let count = slot.count;
            // First position holding fewer: equal counts keep their order.
            let pos = out
                .get(..n)
                .unwrap_or(&[])
                .iter()
                .position(|&(_, c)| c < count)
                .unwrap_or(n);
            if pos >= out.len() {
                continue; // not heavier than the lightest kept
            }
            let end = n.min(out.len() - 1);
            out.copy_within(pos..end, pos + 1);
            if let Some(place) = out.get_mut(pos) {
                *place = (slot.ip(), count);
            }
            n = (n + 1).min(out.len());
        }
        n
    }

    /// Connections counted this round toward `port` (`proto` 6 or 17; 0 for others).
    pub(crate) fn per_port(&self, proto: u8, port: u16) -> u32 {
        let counts = match proto {
            IPPROTO_TCP => &self.per_tcp_port,
            IPPROTO_UDP => &self.per_udp_port,
            _ => return 0,
        };
        counts.get(usize::from(port)).copied().unwrap_or(0)
    }

    /// Counted entries this round whose source was not tracked because the table was full
    /// (they are in `per_port` and `counted`, not in `top_sources`).
    #[cfg(test)]
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Entries counted this round (connections to service ports).
    #[cfg(test)]
    pub(crate) fn counted(&self) -> u64 {
        self.counted
    }

    /// Distinct sources tracked this round.
    #[cfg(test)]
    pub(crate) fn sources(&self) -> usize {
        self.used.len()
    }
}

impl std::fmt::Debug for ConnectionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionTable")
            .field("capacity", &self.capacity)
            .field("sources", &self.used.len())
            .field("counted", &self.counted)
            .field("overflowed", &self.overflowed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::conntrack::abi::{TCP_CONNTRACK_SYN_RECV, TCP_CONNTRACK_SYN_SENT};
    use crate::netlink::conntrack::tests::{encode_entry, XorShift};
    use crate::netlink::conntrack::{walk_dump, DumpStats};
    use crate::netlink::wire::{Writer, NLM_F_MULTI};

    fn entry(src: &str, proto: u8, dport: u16, state: Option<u8>) -> Entry {
        Entry {
            src: src.parse().unwrap(),
            dst: if src.contains(':') {
                "2001:db8::80".parse().unwrap()
            } else {
                "192.0.2.80".parse().unwrap()
            },
            proto,
            src_port: Some(40000),
            dst_port: Some(dport),
            tcp_state: state,
        }
    }

    const EST: Option<u8> = Some(TCP_CONNTRACK_ESTABLISHED);

    /// Issue 14: a banned source's entries stay ESTABLISHED (the ban drops its FINs); they
    /// are no connections it holds, nor are a banned prefix's.
    #[test]
    fn issue14_banned_sources_hold_nothing() {
        let mut t = ConnectionTable::new(&[(80, 80)], &[], 16);
        let bans = [
            "203.0.113.7".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        ];
        t.set_banned(bans.into_iter());
        t.begin();
        for src in ["203.0.113.7", "198.51.100.9", "192.0.2.1"] {
            for _ in 0..3 {
                let banned = t.add(&entry(src, IPPROTO_TCP, 80, EST));
                assert_eq!(banned, src != "192.0.2.1", "{src}");
            }
        }
        let mut top = [("0.0.0.0".parse().unwrap(), 0); 4];
        assert_eq!(t.top_sources(&mut top), 1);
        assert_eq!(top[0], ("192.0.2.1".parse().unwrap(), 3));
        assert_eq!(t.per_port(IPPROTO_TCP, 80), 3);
        t.set_banned(std::iter::empty());
        t.begin();
        t.add(&entry("203.0.113.7", IPPROTO_TCP, 80, EST));
        assert_eq!(t.per_port(IPPROTO_TCP, 80), 1, "lifted with the ban");
    }

    #[test]
    fn port_sets() {
        let s = PortSet::from_ranges(&[(80, 80), (1000, 1005), (20, 10), (65535, 65535)]);
        for p in [80, 1000, 1003, 1005, 10, 15, 20, 65535] {
            assert!(s.contains(p), "{p}");
        }
        for p in [0, 79, 81, 999, 1006, 9, 21, 65534] {
            assert!(!s.contains(p), "{p}");
        }
        assert!(PortSet::from_ranges(&[]).is_empty());
        assert!(PortSet::from_ranges(&[(0, 65535)]).contains(0));
    }

    #[test]
    fn counts_what_is_documented() {
        let mut t = ConnectionTable::new(&[(22, 22), (443, 443)], &[(53, 53)], 16);
        t.begin();
        for _ in 0..3 {
            t.add(&entry("198.51.100.1", IPPROTO_TCP, 443, EST));
        }
        t.add(&entry(
            "198.51.100.1",
            IPPROTO_TCP,
            443,
            Some(TCP_CONNTRACK_SYN_SENT),
        ));
        t.add(&entry(
            "198.51.100.2",
            IPPROTO_TCP,
            22,
            Some(TCP_CONNTRACK_SYN_RECV),
        ));
        t.add(&entry("198.51.100.2", IPPROTO_TCP, 22, EST));
        t.add(&entry("2001:db8::7", IPPROTO_UDP, 53, None));
        // Not counted: half-open (issue 13/14: a spoofed SYN flood's residue), closing state,
        // no state, other port, TCP-only port over UDP, ICMP.
        t.add(&entry(
            "198.51.100.4",
            IPPROTO_TCP,
            443,
            Some(TCP_CONNTRACK_SYN_RECV),
        ));
        t.add(&entry("198.51.100.3", IPPROTO_TCP, 443, Some(7))); // TIME_WAIT
        t.add(&entry("198.51.100.3", IPPROTO_TCP, 443, None));
        t.add(&entry("198.51.100.3", IPPROTO_TCP, 8080, EST));
        t.add(&entry("198.51.100.3", IPPROTO_UDP, 443, None));
        t.add(&Entry {
            dst_port: None,
            src_port: None,
            ..entry("198.51.100.3", 1, 0, None)
        });
        assert_eq!(t.counted(), 5);
        assert_eq!(t.sources(), 3);
        assert_eq!(t.per_port(IPPROTO_TCP, 443), 3);
        assert_eq!(t.per_port(IPPROTO_TCP, 22), 1);
        assert_eq!(t.per_port(IPPROTO_UDP, 53), 1);
        assert_eq!(t.per_port(IPPROTO_TCP, 8080), 0);
        assert_eq!(t.per_port(1, 0), 0);
        let mut top = [(IpAddr::from([0, 0, 0, 0]), 0); 8];
        assert_eq!(t.top_sources(&mut top), 3);
        assert_eq!(top[0], ("198.51.100.1".parse().unwrap(), 3));
        assert_eq!(top[1], ("198.51.100.2".parse().unwrap(), 1));
        assert_eq!(top[2], ("2001:db8::7".parse().unwrap(), 1));
    }

    #[test]
    fn v4_and_mapped_v6_are_different_sources() {
        let mut t = ConnectionTable::new(&[(80, 80)], &[], 8);
        t.begin();
        t.add(&entry("1.2.3.4", IPPROTO_TCP, 80, EST));
        t.add(&entry("::ffff:1.2.3.4", IPPROTO_TCP, 80, EST));
        t.add(&entry("::102:304", IPPROTO_TCP, 80, EST));
        assert_eq!(t.sources(), 3);
    }

    #[test]
    fn top_sources_keeps_the_heaviest_in_order() {
        let mut t = ConnectionTable::new(&[(80, 80)], &[], 64);
        t.begin();
        // Source i holds (i * 7) % 20 + 1 connections: arrival order is not weight order.
        for i in 0..20u8 {
            for _ in 0..(u32::from(i) * 7) % 20 + 1 {
                t.add(&entry(&format!("10.0.0.{i}"), IPPROTO_TCP, 80, EST));
            }
        }
        let mut all = [(IpAddr::from([0, 0, 0, 0]), 0); 32];
        assert_eq!(t.top_sources(&mut all), 20);
        let counts: Vec<u32> = all[..20].iter().map(|&(_, c)| c).collect();
        let mut sorted = counts.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(counts, sorted);
        assert_eq!(counts[0], 20);

        let mut three = [(IpAddr::from([0, 0, 0, 0]), 0); 3];
        assert_eq!(t.top_sources(&mut three), 3);
        assert_eq!(&three[..], &all[..3]);
        assert_eq!(t.top_sources(&mut []), 0);
    }

    #[test]
    fn begin_clears_without_reallocating() {
        let mut t = ConnectionTable::new(&[(80, 80)], &[(53, 53)], 4);
        let slots = t.slots.as_ptr();
        for round in 0..3u32 {
            t.begin();
            for i in 0..=round {
                t.add(&entry(&format!("10.0.0.{i}"), IPPROTO_TCP, 80, EST));
                t.add(&entry(&format!("10.0.0.{i}"), IPPROTO_UDP, 53, None));
            }
            assert_eq!(t.sources(), round as usize + 1);
            assert_eq!(t.per_port(IPPROTO_TCP, 80), round + 1);
            assert_eq!(t.per_port(IPPROTO_UDP, 53), round + 1);
            assert_eq!(t.counted(), u64::from(round + 1) * 2);
        }
        assert_eq!(t.slots.as_ptr(), slots);
        // The generation wraps: every slot is really cleared.
        t.generation = u32::MAX;
        for s in t.slots.iter_mut() {
            s.generation = u32::MAX;
        }
        t.begin();
        assert_eq!(t.generation, 1);
        assert!(t.slots.iter().all(|s| s.generation == 0));
        t.add(&entry("10.0.0.1", IPPROTO_TCP, 80, EST));
        assert_eq!(t.sources(), 1);
    }

    #[test]
    fn a_full_table_counts_overflow() {
        let mut t = ConnectionTable::new(&[(80, 80)], &[], 8);
        t.begin();
        for i in 0..10u8 {
            for _ in 0..2 {
                t.add(&entry(&format!("10.0.0.{i}"), IPPROTO_TCP, 80, EST));
            }
        }
        assert_eq!(t.sources(), 8);
        assert_eq!(t.overflowed(), 4); // 2 sources × 2 connections
        assert_eq!(t.counted(), 20);
        assert_eq!(t.per_port(IPPROTO_TCP, 80), 20);
        // Known sources still count when full.
        t.add(&entry("10.0.0.0", IPPROTO_TCP, 80, EST));
        assert_eq!(t.overflowed(), 4);
        let mut top = [(IpAddr::from([0, 0, 0, 0]), 0); 1];
        t.top_sources(&mut top);
        assert_eq!(top[0], ("10.0.0.0".parse().unwrap(), 3));
        t.begin();
        assert_eq!((t.overflowed(), t.sources(), t.counted()), (0, 0, 0));
    }

    #[test]
    fn random_entries_keep_the_books_balanced() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        let mut t = ConnectionTable::new(&[(1, 1024)], &[(53, 53)], 100);
        for _ in 0..20 {
            t.begin();
            for _ in 0..5_000 {
                let v6 = rng.below(2) == 0;
                let src = if v6 {
                    IpAddr::V6(Ipv6Addr::from((rng.next() % 300) as u128))
                } else {
                    IpAddr::V4(Ipv4Addr::from((rng.next() % 300) as u32))
                };
                t.add(&Entry {
                    src,
                    dst: src,
                    proto: [IPPROTO_TCP, IPPROTO_UDP, 1][rng.below(3)],
                    src_port: Some(rng.next() as u16),
                    dst_port: [None, Some(53), Some(rng.next() as u16 % 2048)][rng.below(3)],
                    tcp_state: [None, Some(rng.next() as u8 % 12)][rng.below(2)],
                });
            }
            let mut top = vec![(IpAddr::from([0, 0, 0, 0]), 0); 200];
            let n = t.top_sources(&mut top);
            assert_eq!(n, t.sources());
            assert!(n <= 100);
            let tracked: u64 = top[..n].iter().map(|&(_, c)| u64::from(c)).sum();
            assert_eq!(tracked + t.overflowed(), t.counted());
            let ports: u64 = (0..=u16::MAX)
                .map(|p| u64::from(t.per_port(IPPROTO_TCP, p) + t.per_port(IPPROTO_UDP, p)))
                .sum();
            assert_eq!(ports, t.counted());
        }
    }

    #[test]
    fn dump_messages_aggregate_end_to_end() {
        let mut w = Writer::new();
        for i in 0..30u16 {
            let e = entry(&format!("203.0.113.{}", i % 3), IPPROTO_TCP, 443, EST);
            encode_entry(
                &mut w,
                NLM_F_MULTI,
                77,
                &Entry {
                    src_port: Some(i),
                    ..e
                },
            );
        }
        let mut t = ConnectionTable::new(&[(443, 443)], &[], 16);
        t.begin();
        let mut stats = DumpStats::default();
        let before = crate::alloc::thread_allocations();
        walk_dump(w.bytes(), 77, &mut stats, &mut |e| {
            t.add(e);
        })
        .unwrap();
        assert_eq!(
            crate::alloc::thread_allocations() - before,
            0,
            "allocations"
        );
        assert_eq!(stats.entries, 30);
        let mut top = [(IpAddr::from([0, 0, 0, 0]), 0); 3];
        assert_eq!(t.top_sources(&mut top), 3);
        assert!(top.iter().all(|&(_, c)| c == 10));
        assert_eq!(t.per_port(IPPROTO_TCP, 443), 30);
    }
}
