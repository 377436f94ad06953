//! CIDR blocks and address intervals: the vocabulary of safelists and bans.
//! Parsing with helpful errors, containment, and merging into the disjoint
//! [start, end) intervals that an nft interval set wants. And the ranges that are never
//! banned, whatever the traffic says.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address block such as `10.0.0.0/8` or `fd00::/8`; never has host bits set.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a CIDR could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{input:?} is not an IP address or CIDR")]
    NotAnAddress { input: String },
    #[error("prefix length {prefix:?} is not a number")]
    BadPrefix { prefix: String },
    #[error("prefix length {prefix} is out of range for {family} (0-{max})")]
    PrefixOutOfRange {
        prefix: String,
        family: &'static str,
        max: u8,
    },
    #[error("{given} has host bits set (did you mean {suggestion}?)")]
    HostBitsSet { given: String, suggestion: Cidr },
}

/// Number of address bits in the family of `addr`.
fn family_bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family_name(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Network mask with the top `prefix_len` of 32 bits set.
fn mask4(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

/// Network mask with the top `prefix_len` of 128 bits set.
fn mask6(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len.min(128)))
        .unwrap_or(0)
}

/// `addr` with every bit after the first `prefix_len` cleared.
fn network(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask4(prefix_len))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask6(prefix_len))),
    }
}

impl Cidr {
    /// A block; rejects a prefix longer than the family allows and set host bits.
    pub(crate) fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = family_bits(addr);
        if prefix_len > max {
            return Err(CidrError::PrefixOutOfRange {
                prefix: prefix_len.to_string(),
                family: family_name(addr),
                max,
            });
        }
        let net = network(addr, prefix_len);
        if net != addr {
            return Err(CidrError::HostBitsSet {
                given: format!("{addr}/{prefix_len}"),
                suggestion: Cidr {
                    addr: net,
                    prefix_len,
                },
            });
        }
        Ok(Cidr { addr, prefix_len })
    }

    /// The block holding exactly `addr` (/32 or /128).
    pub(crate) fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            prefix_len: family_bits(addr),
        }
    }

    /// The first address of the block.
    pub(crate) fn addr(&self) -> IpAddr {
        self.addr
    }

    pub(crate) fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub(crate) fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// True for a single address (/32 or /128).
    pub(crate) fn is_host(&self) -> bool {
        self.prefix_len == family_bits(self.addr)
    }

    /// True when `ip` is inside the block; always false across families.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                network(ip, self.prefix_len) == self.addr
            }
            _ => false,
        }
    }

    /// True when the two blocks share an address (one holds the other); false across
    /// families.
    pub(crate) fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// First address and the address one past the last, None when the range
    /// runs to the top of the family (e.g. 0.0.0.0/0, 255.255.255.255/32).
    pub(crate) fn interval(&self) -> (IpAddr, Option<IpAddr>) {
        let host_bits = u32::from(family_bits(self.addr) - self.prefix_len);
        let end = match self.addr {
            IpAddr::V4(a) => 1u32
                .checked_shl(host_bits)
                .and_then(|size| u32::from(a).checked_add(size))
                .map(|end| IpAddr::V4(Ipv4Addr::from(end))),
            IpAddr::V6(a) => 1u128
                .checked_shl(host_bits)
                .and_then(|size| u128::from(a).checked_add(size))
                .map(|end| IpAddr::V6(Ipv6Addr::from(end))),
        };
        (self.addr, end)
    }

    /// The inverse of [`Cidr::interval`]: the block exactly covering
    /// [start, end_exclusive) if that range is one CIDR block, else None.
    pub(crate) fn from_interval(start: IpAddr, end_exclusive: Option<IpAddr>) -> Option<Cidr> {
        (0..=family_bits(start))
            .filter_map(|prefix_len| Cidr::new(start, prefix_len).ok())
            .find(|cidr| cidr.interval() == (start, end_exclusive))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Accepts "10.0.0.0/8", "fd00::/8", or a bare address meaning a host.
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let text = text.trim();
        let not_an_address = || CidrError::NotAnAddress {
            input: text.to_string(),
        };
        let Some((addr_text, prefix_text)) = text.split_once('/') else {
            return text
                .parse::<IpAddr>()
                .map(Cidr::host)
                .map_err(|_| not_an_address());
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| not_an_address())?;
        if prefix_text.is_empty() || !prefix_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::BadPrefix {
                prefix: prefix_text.to_string(),
            });
        }
        let max = family_bits(addr);
        let prefix_len = prefix_text
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| CidrError::PrefixOutOfRange {
                prefix: prefix_text.to_string(),
                family: family_name(addr),
                max,
            })?;
        Cidr::new(addr, prefix_len)
    }
}

impl fmt::Display for Cidr {
    /// "10.0.0.0/8"; a host prints as a bare address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix_len)
        }
    }
}

/// Ranges never banned, by us or by an operator: no remote attacker's packets come from
/// them, and the host's own traffic (loopback, link-local neighbours, multicast groups) does.
/// Private ranges (10/8, 192.168/16, fd00::/8…) are not among them: they can be attackers.
const NEVER_BANNED: [(u128, u8, bool, &str); 9] = [
    (0x0000_0000, 8, true, "\"this network\""),
    (0x7f00_0000, 8, true, "loopback"),
    (0xa9fe_0000, 16, true, "link-local"),
    (0xe000_0000, 4, true, "multicast"),
    (0xf000_0000, 4, true, "reserved and broadcast"),
    (0, 128, false, "the unspecified address"),
    (1, 128, false, "loopback"),
    (0xfe80 << 112, 10, false, "link-local"),
    (0xff00 << 112, 8, false, "multicast"),
];

/// The never-banned range `cidr` overlaps, with its name (`127.0.0.0/8`, "loopback"), if
/// any. A ban holding such a range (`0.0.0.0/0`) is refused as well as one inside it.
pub(crate) fn never_banned(cidr: &Cidr) -> Option<(Cidr, &'static str)> {
    NEVER_BANNED
        .iter()
        .find_map(|&(bits, prefix_len, v4, name)| {
            let addr = if v4 {
                IpAddr::V4(Ipv4Addr::from(bits as u32))
            } else {
                IpAddr::V6(Ipv6Addr::from(bits))
            };
            let range = Cidr { addr, prefix_len };
            cidr.overlaps(&range).then_some((range, name))
        })
}

/// Whether a ban of `cidr` would touch `safelist` (the daemon adds the host's own addresses
/// to it) or a range that is never banned.
pub(crate) fn protected(safelist: &[Cidr], cidr: &Cidr) -> bool {
    never_banned(cidr).is_some() || safelist.iter().any(|s| s.overlaps(cidr))
}

/// Sorts and merges overlapping or adjacent intervals; `None` as an end means
/// "to the top of the family" and is larger than any address.
fn merge<T: Ord + Copy>(mut ranges: Vec<(T, Option<T>)>) -> Vec<(T, Option<T>)> {
    ranges.sort();
    let mut merged: Vec<(T, Option<T>)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        if let Some(last) = merged.last_mut() {
            let touches = match last.1 {
                None => true,
                Some(last_end) => start <= last_end,
            };
            if touches {
                last.1 = match (last.1, end) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                continue;
            }
        }
        merged.push((start, end));
    }
    merged
}

/// Sorts and merges overlapping or adjacent CIDRs of the same family into
/// disjoint intervals (start, end_exclusive) ready for an nft interval set;
/// returns v4 and v6 separately.
#[allow(clippy::type_complexity)]
pub(crate) fn merge_intervals(
    cidrs: &[Cidr],
) -> (
    Vec<(Ipv4Addr, Option<Ipv4Addr>)>,
    Vec<(Ipv6Addr, Option<Ipv6Addr>)>,
) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for cidr in cidrs {
        match cidr.interval() {
            (IpAddr::V4(start), end) => v4.push((
                start,
                match end {
                    Some(IpAddr::V4(e)) => Some(e),
                    _ => None,
                },
            )),
            (IpAddr::V6(start), end) => v6.push((
                start,
                match end {
                    Some(IpAddr::V6(e)) => Some(e),
                    _ => None,
                },
            )),
        }
    }
    (merge(v4), merge(v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().expect(text)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    fn v4(text: &str) -> Ipv4Addr {
        text.parse().expect(text)
    }

    fn v6(text: &str) -> Ipv6Addr {
        text.parse().expect(text)
    }

    /// Issue 15: the ranges no ban may touch, and private ranges that stay bannable.
    #[test]
    fn issue15_never_banned_ranges() {
        let never = |text: &str| never_banned(&cidr(text)).map(|(c, name)| (c.to_string(), name));
        for (ban, range) in [
            ("0.1.2.3", "0.0.0.0/8"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("224.0.0.1", "224.0.0.0/4"),
            ("239.255.255.250", "224.0.0.0/4"),
            ("240.0.0.1", "240.0.0.0/4"),
            ("255.255.255.255", "240.0.0.0/4"),
            ("0.0.0.0/0", "0.0.0.0/8"),
            ("96.0.0.0/3", "127.0.0.0/8"),
            ("::", "::"),
            ("::1", "::1"),
            ("fe80::1", "fe80::/10"),
            ("febf::1", "fe80::/10"),
            ("ff02::1", "ff00::/8"),
            ("::/0", "::"),
        ] {
            assert_eq!(never(ban).map(|n| n.0), Some(range.to_string()), "{ban}");
        }
        assert_eq!(never("127.0.0.1").unwrap().1, "loopback");
        for ok in [
            "10.250.0.1",
            "10.0.0.0/8",
            "192.168.1.1",
            "172.16.0.0/12",
            "100.64.0.1",
            "1.0.0.0/8",
            "126.255.255.255",
            "128.0.0.0/3",
            "223.255.255.255",
            "169.253.0.1",
            "fd00:250::1",
            "fd00::/8",
            "2001:db8::/32",
            "::2",
            "fec0::1",
            "fe7f::1",
            "feff::/16",
        ] {
            assert_eq!(never(ok), None, "{ok}");
        }
    }

    #[test]
    fn parses_blocks_and_hosts() {
        let c = cidr("10.0.0.0/8");
        assert_eq!(c.addr(), ip("10.0.0.0"));
        assert_eq!(c.prefix_len(), 8);
        assert!(c.is_ipv4());
        assert!(!c.is_host());

        let h = cidr("10.1.2.3");
        assert_eq!(h, Cidr::host(ip("10.1.2.3")));
        assert_eq!(h.prefix_len(), 32);
        assert!(h.is_host());

        let h6 = cidr("::1");
        assert_eq!(h6.prefix_len(), 128);
        assert!(h6.is_host());
        assert!(!h6.is_ipv4());

        assert_eq!(cidr("fd00::/8").prefix_len(), 8);
        assert_eq!(cidr(" 10.0.0.0/8 "), cidr("10.0.0.0/8"));
        assert_eq!(cidr("10.1.2.3/32"), cidr("10.1.2.3"));
        assert_eq!(cidr("0.0.0.0/0").prefix_len(), 0);
        assert_eq!(cidr("::/0").prefix_len(), 0);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let msg = |text: &str| text.parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(
            msg("10.0.0.1/24"),
            "10.0.0.1/24 has host bits set (did you mean 10.0.0.0/24?)"
        );
        assert_eq!(
            msg("10.0.0.0/33"),
            "prefix length 33 is out of range for IPv4 (0-32)"
        );
        assert_eq!(
            msg("::/129"),
            "prefix length 129 is out of range for IPv6 (0-128)"
        );
        assert_eq!(
            msg("10.0.0.0/99999999999"),
            "prefix length 99999999999 is out of range for IPv4 (0-32)"
        );
        assert_eq!(msg("banana"), "\"banana\" is not an IP address or CIDR");
        assert_eq!(msg(""), "\"\" is not an IP address or CIDR");
        assert_eq!(msg("10.0.0/8"), "\"10.0.0/8\" is not an IP address or CIDR");
        assert_eq!(msg("10.0.0.0/"), "prefix length \"\" is not a number");
        assert_eq!(msg("10.0.0.0/+8"), "prefix length \"+8\" is not a number");
        assert_eq!(msg("10.0.0.0/8/8"), "prefix length \"8/8\" is not a number");
        assert_eq!(
            msg("fd00::1/8"),
            "fd00::1/8 has host bits set (did you mean fd00::/8?)"
        );
        assert_eq!(
            msg("2001:db8::8000/112"),
            "2001:db8::8000/112 has host bits set (did you mean 2001:db8::/112?)"
        );
    }

    #[test]
    fn new_checks_prefix_and_host_bits() {
        assert!(Cidr::new(ip("10.0.0.0"), 33).is_err());
        assert!(Cidr::new(ip("::"), 129).is_err());
        assert!(Cidr::new(ip("::"), 255).is_err());
        assert!(Cidr::new(ip("10.0.0.1"), 31).is_err());
        assert!(Cidr::new(ip("10.0.0.1"), 32).is_ok());
        assert!(Cidr::new(ip("255.255.255.255"), 0).is_err());
        assert!(Cidr::new(ip("::1"), 127).is_err());
        assert!(Cidr::new(ip("::1"), 128).is_ok());
        assert!(Cidr::new(ip("0.0.0.0"), 0).is_ok());
    }

    #[test]
    fn displays_hosts_bare() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("10.1.2.3/32").to_string(), "10.1.2.3");
        assert_eq!(cidr("::1/128").to_string(), "::1");
        assert_eq!(cidr("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").to_string(), "::/0");
    }

    #[test]
    fn containment() {
        let c = cidr("10.0.0.0/8");
        assert!(c.contains(ip("10.0.0.0")));
        assert!(c.contains(ip("10.255.255.255")));
        assert!(!c.contains(ip("11.0.0.0")));
        assert!(!c.contains(ip("::ffff:10.0.0.1")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::")));
        assert!(cidr("::/0").contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(cidr("fd00::/8").contains(ip("fdff::1")));
        assert!(!cidr("fd00::/8").contains(ip("fe00::")));
        assert!(cidr("1.2.3.4").contains(ip("1.2.3.4")));
        assert!(!cidr("1.2.3.4").contains(ip("1.2.3.5")));
        assert!(cidr("::1").contains(ip("::1")));
    }

    #[test]
    fn intervals_including_the_top_of_the_family() {
        assert_eq!(
            cidr("10.0.0.0/8").interval(),
            (ip("10.0.0.0"), Some(ip("11.0.0.0")))
        );
        assert_eq!(
            cidr("10.1.2.3").interval(),
            (ip("10.1.2.3"), Some(ip("10.1.2.4")))
        );
        assert_eq!(cidr("0.0.0.0/0").interval(), (ip("0.0.0.0"), None));
        assert_eq!(
            cidr("255.255.255.255").interval(),
            (ip("255.255.255.255"), None)
        );
        assert_eq!(cidr("255.0.0.0/8").interval(), (ip("255.0.0.0"), None));
        assert_eq!(cidr("::/0").interval(), (ip("::"), None));
        assert_eq!(cidr("::1").interval(), (ip("::1"), Some(ip("::2"))));
        assert_eq!(
            cidr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").interval(),
            (ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), None)
        );
        assert_eq!(
            cidr("fd00::/8").interval(),
            (ip("fd00::"), Some(ip("fe00::")))
        );
    }

    #[test]
    fn from_interval_inverts_interval() {
        for text in [
            "10.0.0.0/8",
            "10.1.2.3",
            "0.0.0.0/0",
            "255.255.255.255",
            "128.0.0.0/1",
            "::/0",
            "::1",
            "fd00::/8",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "8000::/1",
        ] {
            let c = cidr(text);
            let (start, end) = c.interval();
            assert_eq!(Cidr::from_interval(start, end), Some(c), "{text}");
        }
    }

    #[test]
    fn from_interval_rejects_non_blocks() {
        // Three addresses, misaligned start, empty, reversed, mixed families.
        assert_eq!(
            Cidr::from_interval(ip("10.0.0.0"), Some(ip("10.0.0.3"))),
            None
        );
        assert_eq!(
            Cidr::from_interval(ip("10.0.0.1"), Some(ip("10.0.0.3"))),
            None
        );
        assert_eq!(
            Cidr::from_interval(ip("10.0.0.1"), Some(ip("10.0.0.1"))),
            None
        );
        assert_eq!(
            Cidr::from_interval(ip("10.0.0.2"), Some(ip("10.0.0.1"))),
            None
        );
        assert_eq!(Cidr::from_interval(ip("10.0.0.0"), Some(ip("::1"))), None);
        assert_eq!(Cidr::from_interval(ip("1.0.0.0"), None), None);
        assert_eq!(Cidr::from_interval(ip("::1"), None), None);
    }

    #[test]
    fn merges_adjacent_and_overlapping() {
        let (m4, m6) = merge_intervals(&[cidr("10.0.0.128/25"), cidr("10.0.0.0/25")]);
        assert_eq!(m4, vec![(v4("10.0.0.0"), Some(v4("10.0.1.0")))]);
        assert!(m6.is_empty());

        let (m4, _) = merge_intervals(&[
            cidr("10.0.0.0/8"),
            cidr("10.1.0.0/16"),
            cidr("192.168.0.1"),
            cidr("192.168.0.2"),
            cidr("192.168.0.4"),
        ]);
        assert_eq!(
            m4,
            vec![
                (v4("10.0.0.0"), Some(v4("11.0.0.0"))),
                (v4("192.168.0.1"), Some(v4("192.168.0.3"))),
                (v4("192.168.0.4"), Some(v4("192.168.0.5"))),
            ]
        );
    }

    #[test]
    fn merges_up_to_the_top_of_the_family() {
        let (m4, m6) = merge_intervals(&[
            cidr("255.255.255.255"),
            cidr("255.255.255.254"),
            cidr("1.2.3.4"),
            cidr("fd00::/8"),
            cidr("::/0"),
            cidr("::1"),
        ]);
        assert_eq!(
            m4,
            vec![
                (v4("1.2.3.4"), Some(v4("1.2.3.5"))),
                (v4("255.255.255.254"), None),
            ]
        );
        assert_eq!(m6, vec![(v6("::"), None)]);

        let (m4, _) = merge_intervals(&[cidr("0.0.0.0/0"), cidr("10.0.0.0/8")]);
        assert_eq!(m4, vec![(v4("0.0.0.0"), None)]);
    }

    #[test]
    fn merge_of_nothing_is_nothing() {
        let (m4, m6) = merge_intervals(&[]);
        assert!(m4.is_empty() && m6.is_empty());
    }

    #[test]
    fn ordering_puts_v4_first() {
        let mut list = vec![cidr("::1"), cidr("10.0.0.0/8"), cidr("1.0.0.0/8")];
        list.sort();
        assert_eq!(
            list,
            vec![cidr("1.0.0.0/8"), cidr("10.0.0.0/8"), cidr("::1")]
        );
    }
}
