//! Who is sending what: fixed-size per-window summaries of sampled packets — heaviest sources,
//! /24 (/64) prefixes and destination ports (Space-Saving top-k), distinct sources
//! (HyperLogLog), size and TTL histograms. Pure data, no I/O; nothing allocates after `new`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::hll::{hash_addr, hash_u64, HyperLogLog};
use crate::addr::Cidr;
use crate::netlink::nflog::PacketMeta;

/// Number of size buckets: ≤64, ≤128, ≤256, ≤512, ≤1024, ≤1500, larger.
pub(crate) const SIZE_BUCKETS: usize = 7;
/// Inclusive upper bounds of all size buckets but the last (bytes of IP total length).
pub(crate) const SIZE_LIMITS: [u16; SIZE_BUCKETS - 1] = [64, 128, 256, 512, 1024, 1500];
/// Number of TTL buckets, 32 values each: 0–31, 32–63, …, 224–255. Typical initial TTLs are
/// 64 (Linux, macOS), 128 (Windows) and 255 (network gear), so hosts a few hops away land in
/// buckets 1, 3 and 7; spoofed floods often fill the others.
pub(crate) const TTL_BUCKETS: usize = 8;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Per-window summary of sampled packets. Capacity fixed at construction; `record` and
/// `reset` never allocate.
#[derive(Debug)]
pub(crate) struct Talkers {
    samples: u64,
    fragments: u64,
    syns: u64,
    sources: TopK<IpAddr>,
    /// Keyed by the network address of the /24 (IPv4) or /64 (IPv6).
    prefixes: TopK<IpAddr>,
    ports: TopK<(u8, u16)>,
    destinations: TopK<IpAddr>,
    distinct: HyperLogLog,
    sizes: [u64; SIZE_BUCKETS],
    ttls: [u64; TTL_BUCKETS],
}

impl Talkers {
    /// `capacity` keys tracked per table (at least 1), e.g. 64.
    pub(crate) fn new(capacity: usize) -> Talkers {
        Talkers {
            samples: 0,
            fragments: 0,
            syns: 0,
            sources: TopK::new(capacity),
            prefixes: TopK::new(capacity),
            ports: TopK::new(capacity),
            destinations: TopK::new(capacity),
            distinct: HyperLogLog::new(),
            sizes: [0; SIZE_BUCKETS],
            ttls: [0; TTL_BUCKETS],
        }
    }

    pub(crate) fn record(&mut self, p: &PacketMeta) {
        self.samples += 1;
        let hash = hash_addr(p.src);
        self.sources.add_hashed(p.src, hash);
        self.distinct.add_hash(hash);
        self.prefixes.add(prefix_of(p.src));
        match p.dst_port {
            Some(port) => self.ports.add((p.proto, port)),
            // Other IP protocols (GRE, ESP…) have no ports: counted by protocol (issue 14).
            None if !p.fragment => self.ports.add((p.proto, 0)),
            None => {}
        }
        self.destinations.add(p.dst);
        self.sizes[size_bucket(p.len)] += 1;
        self.ttls[usize::from(p.ttl >> 5)] += 1;
        if p.fragment {
            self.fragments += 1;
        }
        if p.tcp_flags
            .is_some_and(|f| f & (TCP_SYN | TCP_ACK) == TCP_SYN)
        {
            self.syns += 1;
        }
    }

    /// Starts a new window, keeping every allocation.
    pub(crate) fn reset(&mut self) {
        self.samples = 0;
        self.fragments = 0;
        self.syns = 0;
        self.sources.reset();
        self.prefixes.reset();
        self.ports.reset();
        self.destinations.reset();
        self.distinct.reset();
        self.sizes = [0; SIZE_BUCKETS];
        self.ttls = [0; TTL_BUCKETS];
    }

    /// Packets recorded this window.
    pub(crate) fn samples(&self) -> u64 {
        self.samples
    }

    /// Fragments among them.
    #[cfg(test)]
    pub(crate) fn fragments(&self) -> u64 {
        self.fragments
    }

    /// TCP packets with SYN and without ACK among them.
    #[cfg(test)]
    pub(crate) fn syns(&self) -> u64 {
        self.syns
    }

    /// Heaviest sources first; fills `out`, returns how many. Counts are upper bounds (see
    /// [`Talkers::sources`] for the error of each).
    pub(crate) fn top_sources(&self, out: &mut [(IpAddr, u64)]) -> usize {
        self.sources.top_with(out, |c| (c.key, c.count), |t| t.1)
    }

    /// Heaviest /24 (IPv4) and /64 (IPv6) prefixes first.
    pub(crate) fn top_prefixes(&self, out: &mut [(Cidr, u64)]) -> usize {
        self.prefixes
            .top_with(out, |c| (prefix_cidr(c.key), c.count), |t| t.1)
    }

    /// Heaviest (protocol, destination port) pairs first; ICMP as (1, type << 8 | code).
    pub(crate) fn top_dst_ports(&self, out: &mut [((u8, u16), u64)]) -> usize {
        self.ports.top_with(out, |c| (c.key, c.count), |t| t.1)
    }

    /// Heaviest destination addresses first (the attacked ones, in a flood).
    pub(crate) fn top_destinations(&self, out: &mut [(IpAddr, u64)]) -> usize {
        self.destinations
            .top_with(out, |c| (c.key, c.count), |t| t.1)
    }

    /// The source table itself, for counts with their error bounds.
    #[cfg(test)]
    pub(crate) fn sources(&self) -> &TopK<IpAddr> {
        &self.sources
    }

    /// Estimated distinct sources this window (HyperLogLog, ±~1.6 %).
    pub(crate) fn distinct_sources(&self) -> f64 {
        self.distinct.estimate()
    }

    /// Packets by IP total length; buckets as in [`SIZE_LIMITS`], the last one larger.
    pub(crate) fn size_histogram(&self) -> &[u64; SIZE_BUCKETS] {
        &self.sizes
    }

    /// Packets by TTL / hop limit in buckets of 32 ([`TTL_BUCKETS`]).
    pub(crate) fn ttl_histogram(&self) -> &[u64; TTL_BUCKETS] {
        &self.ttls
    }
}

fn size_bucket(len: u16) -> usize {
    SIZE_LIMITS
        .iter()
        .position(|&limit| len <= limit)
        .unwrap_or(SIZE_LIMITS.len())
}

/// The network address of the /24 (IPv4) or /64 (IPv6) holding `ip`.
fn prefix_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !u128::from(u64::MAX))),
    }
}

fn prefix_cidr(net: IpAddr) -> Cidr {
    let len = if net.is_ipv4() { 24 } else { 64 };
    // `net` has no host bits (prefix_of), so this cannot fail.
    Cidr::new(net, len).unwrap_or_else(|_| Cidr::host(net))
}

/// A key the top-k tables can hold.
pub(crate) trait Key: Copy + Eq {
    /// Fills unused slots; never reported.
    const VACANT: Self;
    fn hash64(&self) -> u64;
}

impl Key for IpAddr {
    const VACANT: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    fn hash64(&self) -> u64 {
        hash_addr(*self)
    }
}

impl Key for (u8, u16) {
    const VACANT: (u8, u16) = (0, 0);
    fn hash64(&self) -> u64 {
        hash_u64(
            (u64::from(self.0) << 16) | u64::from(self.1),
            0x2545_f491_4f6c_dd1d,
        )
    }
}

/// One tracked key. `count` is an upper bound of its true frequency and `count - error` a
/// lower bound (Space-Saving's guarantee).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted<K> {
    pub(crate) key: K,
    pub(crate) count: u64,
    pub(crate) error: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot<K> {
    key: K,
    hash: u64,
    count: u64,
    error: u64,
}

const EMPTY: u32 = u32::MAX;

/// Space-Saving top-k (Metwally, Agrawal, El Abbadi 2005) over fixed arrays: a min-heap of
/// counters and an open-addressing index from key to counter, so `add` costs O(log k).
/// Any key seen more than total / capacity times is guaranteed to be in the table.
#[derive(Debug)]
pub(crate) struct TopK<K: Key> {
    /// Counters; `slots[..used]` are live. Never moved: the heap and index hold their ids.
    slots: Box<[Slot<K>]>,
    used: usize,
    /// Slot ids as a min-heap by count (`heap[..used]`).
    heap: Box<[u32]>,
    /// Slot id → its position in `heap`.
    pos: Box<[u32]>,
    /// Linear-probing hash index (power-of-two length, at most half full): slot id or EMPTY.
    index: Box<[u32]>,
    total: u64,
}

impl<K: Key> TopK<K> {
    pub(crate) fn new(capacity: usize) -> TopK<K> {
        let cap = capacity.clamp(1, 1 << 24);
        let vacant = Slot {
            key: K::VACANT,
            hash: 0,
            count: 0,
            error: 0,
        };
        TopK {
            slots: vec![vacant; cap].into_boxed_slice(),
            used: 0,
            heap: vec![0; cap].into_boxed_slice(),
            pos: vec![0; cap].into_boxed_slice(),
            index: vec![EMPTY; (cap * 2).next_power_of_two()].into_boxed_slice(),
            total: 0,
        }
    }

    /// Items added since the last reset.
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn reset(&mut self) {
        self.used = 0;
        self.total = 0;
        self.index.fill(EMPTY);
    }

    pub(crate) fn add(&mut self, key: K) {
        self.add_hashed(key, key.hash64());
    }

    /// `add` with the key's hash already at hand (it must be `key.hash64()`).
    fn add_hashed(&mut self, key: K, hash: u64) {
        self.total += 1;
        if let Some(id) = self.find(key, hash) {
            self.slots[id].count += 1;
            self.sift_down(self.pos[id] as usize);
        } else if self.used < self.slots.len() {
            let id = self.used;
            self.used += 1;
            self.slots[id] = Slot {
                key,
                hash,
                count: 1,
                error: 0,
            };
            self.heap[id] = id as u32;
            self.pos[id] = id as u32;
            self.sift_up(id);
            self.index_insert(id, hash);
        } else {
            // Evict the smallest counter; the newcomer inherits its count as error.
            let id = self.heap[0] as usize;
            self.index_remove(id);
            let min = self.slots[id].count;
            self.slots[id] = Slot {
                key,
                hash,
                count: min + 1,
                error: min,
            };
            self.index_insert(id, hash);
            self.sift_down(0);
        }
    }

    /// The count of `key` if it is tracked.
    #[cfg(test)]
    pub(crate) fn get(&self, key: K) -> Option<Counted<K>> {
        self.find(key, key.hash64())
            .map(|id| counted(&self.slots[id]))
    }

    /// Heaviest first; fills `out`, returns how many.
    #[cfg(test)]
    pub(crate) fn top(&self, out: &mut [Counted<K>]) -> usize {
        self.top_with(out, |c| c, |c| c.count)
    }

    /// Insertion of every live counter into `out`, kept sorted by count (descending; ties in
    /// slot order). O(capacity · out.len()), no allocation.
    fn top_with<T: Copy>(
        &self,
        out: &mut [T],
        make: impl Fn(Counted<K>) -> T,
        count_of: impl Fn(&T) -> u64,
    ) -> usize {
        let mut n = 0;
        for slot in &self.slots[..self.used] {
            let mut i = n;
            while i > 0 && count_of(&out[i - 1]) < slot.count {
                i -= 1;
            }
            if i >= out.len() {
                continue;
            }
            let last = n.min(out.len() - 1);
            out.copy_within(i..last, i + 1);
            out[i] = make(counted(slot));
            if n < out.len() {
                n += 1;
            }
        }
        n
    }

    fn find(&self, key: K, hash: u64) -> Option<usize> {
        let mask = self.index.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let id = self.index[i];
            if id == EMPTY {
                return None;
            }
            let slot = &self.slots[id as usize];
            if slot.hash == hash && slot.key == key {
                return Some(id as usize);
            }
            i = (i + 1) & mask;
        }
    }

    fn index_insert(&mut self, id: usize, hash: u64) {
        let mask = self.index.len() - 1;
        let mut i = hash as usize & mask;
        while self.index[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.index[i] = id as u32;
    }

    /// Removes slot `id` from the index, shifting later entries of its probe run back so no
    /// tombstones are needed.
    fn index_remove(&mut self, id: usize) {
        let mask = self.index.len() - 1;
        let mut hole = self.slots[id].hash as usize & mask;
        while self.index[hole] != id as u32 {
            if self.index[hole] == EMPTY {
                return; // not indexed (cannot happen)
            }
            hole = (hole + 1) & mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let other = self.index[j];
            if other == EMPTY {
                break;
            }
            let home = self.slots[other as usize].hash as usize & mask;
            // Move it into the hole unless its home lies cyclically in (hole, j].
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.index[hole] = other;
                hole = j;
            }
        }
        self.index[hole] = EMPTY;
    }

    fn count_at(&self, heap_pos: usize) -> u64 {
        self.slots[self.heap[heap_pos] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a] as usize] = a as u32;
        self.pos[self.heap[b] as usize] = b as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.count_at(parent) <= self.count_at(i) {
                break;
            }
            self.swap(parent, i);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let left = 2 * i + 1;
            if left >= self.used {
                return;
            }
            let right = left + 1;
            let child = if right < self.used && self.count_at(right) < self.count_at(left) {
                right
            } else {
                left
            };
            if self.count_at(i) <= self.count_at(child) {
                return;
            }
            self.swap(i, child);
            i = child;
        }
    }
}

fn counted<K: Copy>(slot: &Slot<K>) -> Counted<K> {
    Counted {
        key: slot.key,
        count: slot.count,
        error: slot.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic test randomness without crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    fn v4(a: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    fn udp_from(src: IpAddr, dport: u16) -> PacketMeta {
        PacketMeta {
            src,
            dst: v4(0x0afa_0002),
            proto: 17,
            src_port: Some(40000),
            dst_port: Some(dport),
            len: 100,
            ttl: 60,
            tcp_flags: None,
            fragment: false,
        }
    }

    #[test]
    fn exact_counts_when_keys_fit() {
        let mut t = Talkers::new(64);
        // 50 sources, source i sent i + 1 packets, interleaved.
        for round in 0..50u32 {
            for i in round..50 {
                t.record(&udp_from(v4(0x0a00_0000 + i * 256), 53));
            }
        }
        assert_eq!(t.samples(), (1..=50).sum::<u64>());
        let mut out = [(v4(0), 0); 64];
        let n = t.top_sources(&mut out);
        assert_eq!(n, 50);
        for (rank, (ip, count)) in out[..n].iter().enumerate() {
            let i = 49 - rank as u32;
            assert_eq!(*ip, v4(0x0a00_0000 + i * 256));
            assert_eq!(*count, u64::from(i) + 1);
            assert_eq!(t.sources().get(*ip).map(|c| c.error), Some(0));
        }
        // Each source in its own /24: same counts by prefix.
        let mut prefixes = [(Cidr::host(v4(0)), 0); 3];
        assert_eq!(t.top_prefixes(&mut prefixes), 3);
        assert_eq!(prefixes[0].0.to_string(), "10.0.49.0/24");
        assert_eq!(prefixes[0].1, 50);
        let mut ports = [((0, 0), 0); 4];
        assert_eq!(t.top_dst_ports(&mut ports), 1);
        assert_eq!(ports[0], ((17, 53), t.samples()));
    }

    #[test]
    fn heavy_hitter_among_fifty_thousand_light_sources() {
        let mut t = Talkers::new(64);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let heavy = v4(0xc633_6407); // 198.51.100.7
        let mut heavy_true = 0;
        for i in 0..50_000 {
            t.record(&udp_from(v4(rng.next() as u32), 80));
            if i % 10 == 0 {
                t.record(&udp_from(heavy, 80));
                heavy_true += 1;
            }
        }
        let mut out = [(v4(0), 0); 5];
        assert_eq!(t.top_sources(&mut out), 5);
        assert_eq!(out[0].0, heavy);
        let c = t.sources().get(heavy).unwrap();
        assert!(
            c.count >= heavy_true && c.count - c.error <= heavy_true,
            "{c:?}"
        );
        // Sorted, heaviest first.
        assert!(out.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(t.sources().total(), t.samples());
        let d = t.distinct_sources();
        assert!((d - 50_001.0).abs() / 50_001.0 < 0.05, "distinct {d}");
    }

    #[test]
    fn counts_bound_the_truth_under_churn() {
        // A skewed stream over 1000 keys into 16 counters: every tracked count is an upper
        // bound and count - error a lower bound of the true frequency.
        let mut top = TopK::<(u8, u16)>::new(16);
        let mut truth = vec![0u64; 1000];
        let mut rng = Rng(7);
        for _ in 0..100_000 {
            let r = rng.next();
            // Half the stream on keys 0..4, the rest spread over 1000 keys.
            let key = if r & 1 == 0 {
                (r >> 8) % 4
            } else {
                (r >> 8) % 1000
            } as u16;
            truth[usize::from(key)] += 1;
            top.add((6, key));
        }
        let mut out = [Counted {
            key: (0, 0),
            count: 0,
            error: 0,
        }; 16];
        assert_eq!(top.top(&mut out), 16);
        for c in out {
            let t = truth[usize::from(c.key.1)];
            assert!(c.count >= t && c.count - c.error <= t, "{c:?} truth {t}");
        }
        // Every key above total / capacity is tracked, and here they lead the table.
        let mut heavy: Vec<u16> = out[..4].iter().map(|c| c.key.1).collect();
        heavy.sort_unstable();
        assert_eq!(heavy, [0, 1, 2, 3]);
        // Sum of counts equals items added (Space-Saving invariant).
        let mut all = [Counted {
            key: (0, 0),
            count: 0,
            error: 0,
        }; 32];
        let n = top.top(&mut all);
        assert_eq!(all[..n].iter().map(|c| c.count).sum::<u64>(), top.total());
    }

    #[test]
    fn distinct_sources_within_five_percent() {
        let mut t = Talkers::new(64);
        for seed in 1..=4u64 {
            for n in [1_000usize, 10_000, 50_000] {
                t.reset();
                let mut rng = Rng(seed * 0x1234_5678_9abc);
                let mut seen = std::collections::HashSet::new();
                while seen.len() < n {
                    let r = rng.next();
                    let src = if r & 1 == 0 {
                        v4((r >> 32) as u32)
                    } else {
                        IpAddr::V6(Ipv6Addr::from(u128::from(r) << 17))
                    };
                    seen.insert(src);
                    t.record(&udp_from(src, 80));
                }
                let e = t.distinct_sources();
                let err = (e - n as f64).abs() / n as f64;
                assert!(err < 0.05, "seed {seed}, {n} sources: estimated {e:.0}");
            }
        }
    }

    #[test]
    fn histograms_and_flags() {
        let mut t = Talkers::new(4);
        let mut p = udp_from(v4(1), 9);
        for (len, ttl) in [
            (40, 0),
            (64, 31),
            (65, 32),
            (1500, 64),
            (1501, 128),
            (65535, 255),
        ] {
            p.len = len;
            p.ttl = ttl;
            t.record(&p);
        }
        assert_eq!(t.size_histogram(), &[2, 1, 0, 0, 0, 1, 2]);
        assert_eq!(t.ttl_histogram(), &[2, 1, 1, 0, 1, 0, 0, 1]);
        p.proto = 6;
        p.tcp_flags = Some(TCP_SYN);
        t.record(&p);
        p.tcp_flags = Some(TCP_SYN | TCP_ACK);
        p.fragment = true;
        t.record(&p);
        assert_eq!((t.syns(), t.fragments()), (1, 1));
    }

    #[test]
    fn ipv6_prefixes_are_slash_64() {
        let mut t = Talkers::new(8);
        for i in 0..10u128 {
            let a = (0x2001_0db8_0000_0001u128 << 64) | i;
            t.record(&udp_from(IpAddr::V6(Ipv6Addr::from(a)), 443));
        }
        let mut out = [(Cidr::host(v4(0)), 0); 2];
        assert_eq!(t.top_prefixes(&mut out), 1);
        assert_eq!(out[0].0.to_string(), "2001:db8:0:1::/64");
        assert_eq!(out[0].1, 10);
    }

    #[test]
    fn reset_keeps_behaviour_and_memory_fixed() {
        let mut t = Talkers::new(64);
        let caps = |t: &Talkers| {
            [
                t.sources.slots.len(),
                t.sources.index.len(),
                t.prefixes.heap.len(),
                t.ports.pos.len(),
            ]
        };
        let before = caps(&t);
        let mut rng = Rng(42);
        for window in 0..3 {
            for _ in 0..100_000 {
                let r = rng.next();
                let mut p = udp_from(v4(r as u32 & 0x00ff_ffff), (r >> 40) as u16);
                p.len = (r >> 24) as u16;
                t.record(&p);
            }
            assert_eq!(t.samples(), 100_000, "window {window}");
            assert_eq!(t.size_histogram().iter().sum::<u64>(), 100_000);
            assert_eq!(caps(&t), before);
            t.reset();
            assert_eq!(t.samples(), 0);
            assert_eq!(t.distinct_sources(), 0.0);
            assert_eq!(t.top_sources(&mut [(v4(0), 0); 4]), 0);
        }
        // After resets the tables count exactly again.
        for i in 0..10u32 {
            for _ in 0..=i {
                t.record(&udp_from(v4(i), 1));
            }
        }
        let mut out = [(v4(0), 0); 3];
        assert_eq!(t.top_sources(&mut out), 3);
        assert_eq!(out, [(v4(9), 10), (v4(8), 9), (v4(7), 8)]);
        assert_eq!(caps(&t), before);
    }

    #[test]
    fn index_stays_consistent_through_evictions() {
        // Tiny table, many keys: every tracked key must be findable, none twice.
        let mut top = TopK::<IpAddr>::new(3);
        let mut rng = Rng(99);
        for _ in 0..20_000 {
            top.add(v4((rng.next() % 50) as u32));
            for slot in &top.slots[..top.used] {
                assert!(top.find(slot.key, slot.hash).is_some());
            }
            let live = top.index.iter().filter(|&&i| i != EMPTY).count();
            assert_eq!(live, top.used);
        }
    }
}
