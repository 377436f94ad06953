//! IP protocol numbers (IANA's, the kernel's `IPPROTO_*`), named once for every layer: the
//! ruleset's matches, NFLOG's header walk, conntrack's tuples, the classifier and BGP FlowSpec.

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
/// IP in IP (nft's `ipencap`).
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_DCCP: u8 = 33;
/// IPv6 in IPv4 (6in4).
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_PIM: u8 = 103;
pub const IPPROTO_VRRP: u8 = 112;
pub const IPPROTO_SCTP: u8 = 132;
/// IPv6 mobility header.
pub const IPPROTO_MH: u8 = 135;
pub const IPPROTO_UDPLITE: u8 = 136;
