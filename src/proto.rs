//! IP protocol numbers (IANA's, the kernel's `IPPROTO_*`), named once for every layer: the
//! ruleset's matches, NFLOG's header walk, conntrack's tuples, the classifier and BGP FlowSpec.

pub(crate) const IPPROTO_HOPOPTS: u8 = 0;
pub(crate) const IPPROTO_ICMP: u8 = 1;
/// IP in IP (nft's `ipencap`).
pub(crate) const IPPROTO_IPIP: u8 = 4;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_DCCP: u8 = 33;
/// IPv6 in IPv4 (6in4).
pub(crate) const IPPROTO_IPV6: u8 = 41;
pub(crate) const IPPROTO_ROUTING: u8 = 43;
pub(crate) const IPPROTO_FRAGMENT: u8 = 44;
pub(crate) const IPPROTO_GRE: u8 = 47;
pub(crate) const IPPROTO_ESP: u8 = 50;
pub(crate) const IPPROTO_AH: u8 = 51;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;
pub(crate) const IPPROTO_DSTOPTS: u8 = 60;
pub(crate) const IPPROTO_PIM: u8 = 103;
pub(crate) const IPPROTO_VRRP: u8 = 112;
pub(crate) const IPPROTO_SCTP: u8 = 132;
/// IPv6 mobility header.
pub(crate) const IPPROTO_MH: u8 = 135;
pub(crate) const IPPROTO_UDPLITE: u8 = 136;
