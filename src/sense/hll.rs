//! HyperLogLog distinct counter over a fixed array of 2^12 one-byte registers (standard error
//! ±1.6 %), and the 64-bit mixer the sense module hashes addresses and keys with. Estimates use
//! Ertl's improved estimator (2017): no bias tables and no switch to linear counting.

use std::net::IpAddr;

/// Register index bits: 2^12 registers, standard error 1.04 / sqrt(4096) ≈ 1.6 %.
pub(crate) const PRECISION: u32 = 12;
const REGISTERS: usize = 1 << PRECISION;
/// Hash bits left for the rank once the register index is taken (Ertl's q).
const RANK_BITS: u32 = 64 - PRECISION;
/// α∞ = 1 / (2 ln 2).
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// Multiplier of the golden ratio (Fibonacci hashing), spreads sequential inputs first.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_V4: u64 = 0x5851_f42d_4c95_7f2d;
const SEED_V6: u64 = 0x1405_7b7e_f767_814f;

/// A bijective 64-bit finalizer (splitmix64 / Stafford's mix 13): every input bit changes
/// about half the output bits.
pub(crate) const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Hashes a small integer key (with a per-use seed) to 64 well-mixed bits.
pub(crate) const fn hash_u64(x: u64, seed: u64) -> u64 {
    mix64(x.wrapping_mul(GOLDEN) ^ seed)
}

/// Hashes an address's bytes; IPv4 and IPv6 are seeded apart. Distinct IPv4 addresses never
/// collide (the mix is a bijection).
pub(crate) fn hash_addr(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => hash_u64(u64::from(u32::from(a)), SEED_V4),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            let high = hash_u64((v >> 64) as u64, SEED_V6);
            hash_u64(v as u64, high)
        }
    }
}

/// A HyperLogLog sketch. Its registers are allocated once by `new`; `add` and `reset` never
/// allocate.
pub(crate) struct HyperLogLog {
    registers: Box<[u8; REGISTERS]>,
}

impl std::fmt::Debug for HyperLogLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperLogLog")
            .field("estimate", &self.estimate())
            .finish()
    }
}

impl Default for HyperLogLog {
    fn default() -> HyperLogLog {
        HyperLogLog::new()
    }
}

impl HyperLogLog {
    pub(crate) fn new() -> HyperLogLog {
        HyperLogLog {
            registers: Box::new([0; REGISTERS]),
        }
    }

    /// Records one item by its 64-bit hash (see [`hash_addr`]).
    pub(crate) fn add_hash(&mut self, hash: u64) {
        let index = (hash >> RANK_BITS) as usize;
        let rest = hash << PRECISION;
        let rank = (rest.leading_zeros().min(RANK_BITS) + 1) as u8;
        if let Some(r) = self.registers.get_mut(index) {
            if rank > *r {
                *r = rank;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn add_addr(&mut self, ip: IpAddr) {
        self.add_hash(hash_addr(ip));
    }

    /// Forgets everything, keeping the registers.
    pub(crate) fn reset(&mut self) {
        self.registers.fill(0);
    }

    /// Estimated number of distinct items added since the last reset.
    pub(crate) fn estimate(&self) -> f64 {
        // Histogram of register values: 0 ..= RANK_BITS + 1.
        let mut counts = [0u32; RANK_BITS as usize + 2];
        for &r in self.registers.iter() {
            if let Some(c) = counts.get_mut(usize::from(r)) {
                *c += 1;
            }
        }
        let m = REGISTERS as f64;
        let empty = f64::from(counts[0]);
        if empty == m {
            return 0.0;
        }
        let q = RANK_BITS as usize;
        let mut z = m * tau(1.0 - f64::from(counts[q + 1]) / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + f64::from(counts[k]));
        }
        z += m * sigma(empty / m);
        ALPHA_INF * m * m / z
    }
}

/// σ(x) = x + Σ_{k≥1} x^(2^k) · 2^(k−1), for x < 1.
fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if z == previous {
            return z;
        }
    }
}

/// τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))² · 2^−k) / 3, for 0 < x < 1.
fn tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == previous {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn relative_error(estimate: f64, truth: usize) -> f64 {
        (estimate - truth as f64).abs() / truth as f64
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(HyperLogLog::new().estimate(), 0.0);
    }

    #[test]
    fn sequential_ipv4_within_five_percent() {
        for n in [1_000usize, 10_000, 50_000] {
            let mut h = HyperLogLog::new();
            for i in 0..n as u32 {
                // Each twice: duplicates must not count.
                h.add_addr(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
                h.add_addr(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
            }
            let e = h.estimate();
            assert!(relative_error(e, n) < 0.05, "{n}: estimated {e}");
        }
    }

    #[test]
    fn ipv6_and_small_counts() {
        let mut h = HyperLogLog::new();
        for i in 0..20_000u128 {
            h.add_addr(IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8u128 << 96) | (i << 64),
            )));
        }
        let e = h.estimate();
        assert!(relative_error(e, 20_000) < 0.05, "estimated {e}");
        let mut h = HyperLogLog::new();
        for i in 0..10u32 {
            h.add_addr(IpAddr::V4(Ipv4Addr::from(i)));
        }
        assert!((h.estimate() - 10.0).abs() < 0.5, "{}", h.estimate());
    }

    #[test]
    fn reset_forgets() {
        let mut h = HyperLogLog::new();
        for i in 0..5_000u32 {
            h.add_addr(IpAddr::V4(Ipv4Addr::from(i)));
        }
        h.reset();
        assert_eq!(h.estimate(), 0.0);
        for i in 0..1_000u32 {
            h.add_addr(IpAddr::V4(Ipv4Addr::from(i)));
        }
        assert!(relative_error(h.estimate(), 1_000) < 0.05);
    }

    #[test]
    fn v4_and_v6_hash_apart() {
        let v4 = hash_addr(IpAddr::V4(Ipv4Addr::new(0, 0, 0, 1)));
        let v6 = hash_addr(IpAddr::V6(Ipv6Addr::from(1u128)));
        assert_ne!(v4, v6);
    }
}
