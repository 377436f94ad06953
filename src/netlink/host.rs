//! This host's own addresses (an rtnetlink address dump): connections it opens itself, or to
//! itself, are not a remote source holding connections to our services. And the automatic safelist, so
//! that an operator is never locked out: own addresses, default gateways (rtnetlink), name
//! servers (resolv.conf) and the peers of established SSH sessions (sock_diag). And the speed
//! of the fastest link (sysfs), which the warm-up's absolute ceilings are drawn from.

use std::io::{self, Cursor};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use neli::consts::rtnl::{Ifa, RtAddrFamily, RtScope, RtTable, Rta, Rtn, Rtprot};
use neli::consts::socket::NlFamily;
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder, Rtmsg, RtmsgBuilder};
use neli::types::{Buffer, RtBuffer};
use neli::{FromBytesWithInput, Header};

use super::diag;
use super::wire::Msg;
use super::NlError;
use crate::addr::Cidr;

/// Every address configured on an interface of this network namespace, loopback included:
/// an RTM_GETADDR dump, each address's IFA_LOCAL (the local end of a point-to-point link)
/// or else its IFA_ADDRESS, as getifaddrs(3) reads them; sorted and deduplicated.
pub fn own_addresses() -> io::Result<Vec<IpAddr>> {
    let request = IfaddrmsgBuilder::default()
        .ifa_family(RtAddrFamily::Unspecified) // every family
        .ifa_prefixlen(0)
        .ifa_scope(RtScope::Universe)
        .ifa_index(0)
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut out = Vec::new();
    diag::dump(
        NlFamily::Route,
        "rtnetlink: dump addresses",
        RTM_GETADDR,
        request,
        &mut |m| interface_address(m, &mut out),
    )
    .map_err(into_io)?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Appends to `out` the IPv4 or IPv6 address of `msg` when it is an RTM_NEWADDR message;
/// does nothing for any other message. Panic-free on any input.
pub(crate) fn interface_address(msg: &Msg, out: &mut Vec<IpAddr>) {
    if msg.kind() != RTM_NEWADDR {
        return;
    }
    let payload = msg.payload();
    let Ok(ifa) = Ifaddrmsg::from_bytes_with_input(&mut Cursor::new(payload), payload.len()) else {
        return;
    };
    let len = match ifa.ifa_family() {
        RtAddrFamily::Inet => 4,
        RtAddrFamily::Inet6 => 16,
        _ => return,
    };
    let attrs = ifa.rtattrs().get_attr_handle();
    let addr = attrs
        .get_attribute(Ifa::Local)
        .or_else(|| attrs.get_attribute(Ifa::Address))
        .map(|a| a.rta_payload().as_ref())
        .filter(|bytes| bytes.len() == len)
        .and_then(ip_from);
    out.extend(addr);
}

/// Message types and numbers of linux/rtnetlink.h (the structures are neli's `Rtmsg` and
/// `Ifaddrmsg`).
pub(crate) mod rt {
    pub(crate) const RTM_NEWADDR: u16 = 20;
    pub(crate) const RTM_GETADDR: u16 = 22;
    pub(crate) const RTM_NEWROUTE: u16 = 24;
    pub(crate) const RTM_GETROUTE: u16 = 26;

    /// rtm_type of a route that forwards (via a gateway or directly).
    #[cfg(test)]
    pub(crate) const RTN_UNICAST: u8 = 1;

    #[cfg(test)]
    pub(crate) const RTA_DST: u16 = 1;
    #[cfg(test)]
    pub(crate) const RTA_GATEWAY: u16 = 5;
    #[cfg(test)]
    pub(crate) const RTA_MULTIPATH: u16 = 9;
    #[cfg(test)]
    pub(crate) const RTA_VIA: u16 = 18;

    /// Size of struct rtnexthop, which its own attributes (RTA_GATEWAY, RTA_VIA) follow.
    #[cfg(test)]
    pub(crate) const RTNH_LEN: usize = 8;
}

use rt::*;

/// struct rtnexthop, one nexthop of an RTA_MULTIPATH attribute, with its attributes.
#[derive(Debug, neli::FromBytes, neli::Header)]
#[neli(padding)]
#[allow(dead_code)] // the fixed fields are read by the derived parser, not by us
struct Rtnexthop {
    /// The whole nexthop, attributes included.
    rtnh_len: u16,
    rtnh_flags: u8,
    rtnh_hops: u8,
    rtnh_ifindex: i32,
    #[neli(
        input = "(rtnh_len as usize).checked_sub(Self::header_size()).ok_or(neli::err::DeError::InvalidInput(rtnh_len as usize))?"
    )]
    attrs: RtBuffer<Rta, Buffer>,
}

/// The gateways of the default routes (IPv4 and IPv6, every table) of this network namespace,
/// from an RTM_GETROUTE dump; sorted and deduplicated. Multipath routes give every nexthop's
/// gateway. (A route using a nexthop object shows its gateway only while the
/// `net.ipv4.nexthop_compat_mode` sysctl is on, the default.)
pub(crate) fn default_gateways() -> io::Result<Vec<IpAddr>> {
    let request = RtmsgBuilder::default()
        .rtm_family(RtAddrFamily::Unspecified) // every family
        .rtm_dst_len(0)
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::Unspec)
        .rtm_protocol(Rtprot::Unspec)
        .rtm_scope(RtScope::Universe)
        .rtm_type(Rtn::Unspec)
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut out = Vec::new();
    diag::dump(
        NlFamily::Route,
        "rtnetlink: dump routes",
        RTM_GETROUTE,
        request,
        &mut |m| default_route_gateways(m, &mut out),
    )
    .map_err(into_io)?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Appends to `out` the gateways of `msg` when it is an IPv4 or IPv6 default route (prefix
/// length 0, type unicast); does nothing for any other message. Panic-free on any input.
pub(crate) fn default_route_gateways(msg: &Msg, out: &mut Vec<IpAddr>) {
    if msg.kind() != RTM_NEWROUTE {
        return;
    }
    let payload = msg.payload();
    let Ok(rtm) = Rtmsg::from_bytes_with_input(&mut Cursor::new(payload), payload.len()) else {
        return;
    };
    if !matches!(rtm.rtm_family(), RtAddrFamily::Inet | RtAddrFamily::Inet6)
        || *rtm.rtm_dst_len() != 0
        || *rtm.rtm_type() != Rtn::Unicast
    {
        return;
    }
    gateways_in(rtm.rtattrs(), out);
    for attr in rtm.rtattrs().iter() {
        if *attr.rta_type() != Rta::Multipath {
            continue;
        }
        let bytes = attr.rta_payload().as_ref();
        // A nexthop whose length does not fit spoils the list: none of it is read.
        let Ok(nexthops) =
            Vec::<Rtnexthop>::from_bytes_with_input(&mut Cursor::new(bytes), bytes.len())
        else {
            continue;
        };
        for nexthop in &nexthops {
            gateways_in(&nexthop.attrs, out);
        }
    }
}

/// The RTA_GATEWAY and RTA_VIA addresses among `attrs`.
fn gateways_in(attrs: &RtBuffer<Rta, Buffer>, out: &mut Vec<IpAddr>) {
    for attr in attrs.iter() {
        let bytes = attr.rta_payload().as_ref();
        let addr = match attr.rta_type() {
            Rta::Gateway => ip_from(bytes),
            // struct rtvia: a u16 family, then the address (an IPv4 route via IPv6).
            Rta::Via => bytes.get(2..).and_then(ip_from),
            _ => None,
        };
        out.extend(addr.filter(|a| !a.is_unspecified()));
    }
}

/// A 4-byte IPv4 or 16-byte IPv6 address, by its length.
fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

fn into_io(e: NlError) -> io::Error {
    let kind = match &e {
        NlError::Io { source, .. } => source.kind(),
        NlError::Kernel { errno, .. } => io::Error::from_raw_os_error(*errno).kind(),
        NlError::Malformed(_) => io::ErrorKind::InvalidData,
        NlError::BatchTooLarge { .. } => io::ErrorKind::InvalidInput,
    };
    io::Error::new(kind, e)
}

/// The name servers of a resolv.conf (normally /etc/resolv.conf), in file order without
/// repeats: the address of every `nameserver ADDR` line, a zone index (`fe80::1%eth0`)
/// dropped. Comments and lines that do not parse are skipped; a file that cannot be read
/// (missing, say) gives an empty list.
pub(crate) fn resolvers(resolv_conf: &Path) -> Vec<IpAddr> {
    read_resolvers(resolv_conf).unwrap_or_default()
}

/// Like `resolvers`, but a file that exists and cannot be read is an error.
fn read_resolvers(resolv_conf: &Path) -> io::Result<Vec<IpAddr>> {
    match std::fs::read(resolv_conf) {
        Ok(bytes) => Ok(parse_resolv_conf(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The `nameserver` addresses of resolv.conf text. More lenient than the C library (leading
/// blanks are allowed, there is no limit of three): a safelist would rather hold one address
/// too many than miss the resolver.
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        // A comment line starts with `#` or `;`, so its first word is never the keyword.
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        let addr = word.split('%').next().unwrap_or(word);
        if let Ok(addr) = addr.parse::<IpAddr>() {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out
}

/// The addresses never to drop, found on this host, by part: its own addresses, the peers of
/// the established TCP connections to the SSH port (the operator's sessions), the default
/// gateways and the name servers of a resolv.conf. Read in parts so that the cheap ones can
/// be read again often (one address dump, one sock_diag dump filtered by port in the kernel) and
/// the others seldom (a dump of every route; a file). Never fails: a part that cannot be read
/// keeps what it held and is described in the returned warnings (for the caller to log), as a
/// partial safelist is better than none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AutoSafelist {
    pub(crate) own: Vec<IpAddr>,
    pub(crate) ssh_peers: Vec<IpAddr>,
    pub(crate) gateways: Vec<IpAddr>,
    pub(crate) resolvers: Vec<IpAddr>,
}

impl AutoSafelist {
    /// Reads the host's addresses and the peers of established connections to `ssh_port`;
    /// returns the warnings of the parts that could not be read.
    pub(crate) fn read_sessions(&mut self, ssh_port: u16) -> Vec<String> {
        let mut warnings = Vec::new();
        match own_addresses() {
            Ok(a) => self.own = a,
            Err(e) => warnings.push(format!("safelist: own addresses left out: {e}")),
        }
        match diag::established_peers(ssh_port) {
            Ok(a) => self.ssh_peers = a,
            Err(e) => warnings.push(format!(
                "safelist: peers of established connections to port {ssh_port} left out: {e}"
            )),
        }
        warnings
    }

    /// Reads the default gateways and the name servers of `resolv_conf`; returns the
    /// warnings of the parts that could not be read.
    pub(crate) fn read_routes_and_resolvers(&mut self, resolv_conf: &Path) -> Vec<String> {
        let mut warnings = Vec::new();
        match default_gateways() {
            Ok(a) => self.gateways = a,
            Err(e) => warnings.push(format!("safelist: default gateways left out: {e}")),
        }
        match read_resolvers(resolv_conf) {
            Ok(a) => self.resolvers = a,
            Err(e) => warnings.push(format!(
                "safelist: name servers left out: {}: {e}",
                resolv_conf.display()
            )),
        }
        warnings
    }

    /// Every part as host CIDRs, sorted and deduplicated; 0.0.0.0 and :: (a resolv.conf may
    /// say so for "this host") are no one's source address and are left out.
    pub(crate) fn cidrs(&self) -> Vec<Cidr> {
        let all = [&self.own, &self.ssh_peers, &self.gateways, &self.resolvers];
        let mut safe: Vec<Cidr> = all
            .into_iter()
            .flatten()
            .filter(|a| !a.is_unspecified())
            .map(|&a| Cidr::host(a))
            .collect();
        safe.sort_unstable();
        safe.dedup();
        safe
    }
}

/// The speed of the fastest interface that is up and reports one, Mbit/s, from
/// `/sys/class/net/*/speed` (this namespace's interfaces); None when none does (virtio and
/// many virtual interfaces report -1 or nothing).
pub(crate) fn link_speed_mbps() -> Option<u64> {
    let entries = std::fs::read_dir("/sys/class/net").ok()?;
    let links = entries.flatten().filter_map(|entry| {
        let dir = entry.path();
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        Some((read("operstate")?, read("speed")?))
    });
    fastest_link(links)
}

/// The highest speed among interfaces whose operstate is "up" and whose speed is a positive
/// number of Mbit/s.
pub(crate) fn fastest_link(links: impl Iterator<Item = (String, String)>) -> Option<u64> {
    links
        .filter(|(state, _)| state.trim() == "up")
        .filter_map(|(_, speed)| speed.trim().parse::<i64>().ok())
        .filter_map(|mbps| u64::try_from(mbps).ok().filter(|&m| m > 0))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fastest_link_up_with_a_known_speed() {
        let links = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let mixed = links(&[
            ("up\n", "1000\n"),
            ("down\n", "100000\n"),
            ("up\n", "-1\n"),
            ("unknown\n", "\n"),
            ("up\n", "25000\n"),
            ("up\n", "garbage"),
        ]);
        assert_eq!(fastest_link(mixed), Some(25000));
        assert_eq!(fastest_link(links(&[("up\n", "-1\n"), ("up", "0")])), None);
        assert_eq!(fastest_link(links(&[])), None);
    }
    use crate::netlink::diag::tests::{done, fuzz, nlmsg};
    use crate::netlink::diag::{to_bytes, walk, Walk};
    use crate::netlink::wire::{align, Msgs, NLM_F_MULTI};
    use neli::rtnl::RtattrBuilder;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolv_conf_edge_cases() {
        let text = "\
# Generated by NetworkManager
search example.org
nameserver 192.0.2.53
;nameserver 192.0.2.99
#nameserver 192.0.2.98
# nameserver 192.0.2.97
nameserver\t2001:db8::53   # trailing comment
nameserver fe80::1%eth0
  nameserver 198.51.100.53
nameserver 192.0.2.53
nameserver
nameserver not-an-address
nameserver 300.1.1.1
nameservers 192.0.2.96
NAMESERVER 192.0.2.95
nameserver [2001:db8::54]
options edns0 trust-ad
nameserver 127.0.0.53\r
domain 192.0.2.94
";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                ip("192.0.2.53"),
                ip("2001:db8::53"),
                ip("fe80::1"),
                ip("198.51.100.53"),
                ip("127.0.0.53"),
            ]
        );
        assert_eq!(parse_resolv_conf(""), Vec::<IpAddr>::new());
        assert_eq!(parse_resolv_conf("nameserver 0.0.0.0"), vec![ip("0.0.0.0")]);
    }

    #[test]
    fn resolv_conf_files() {
        let dir = std::env::temp_dir();
        let missing = dir.join(format!("fta-no-such-resolv-{}.conf", std::process::id()));
        assert_eq!(resolvers(&missing), Vec::<IpAddr>::new());
        assert!(read_resolvers(&missing).unwrap().is_empty());
        let path = dir.join(format!("fta-resolv-{}.conf", std::process::id()));
        // Not UTF-8 in a comment: the rest is still read.
        std::fs::write(&path, b"# caf\xe9\nnameserver 192.0.2.1\n").unwrap();
        let got = resolvers(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(got, vec![ip("192.0.2.1")]);
        // A directory exists and cannot be read as a file: an error, not an empty list.
        assert!(read_resolvers(&dir).is_err());
        assert_eq!(resolvers(&dir), Vec::<IpAddr>::new());
    }

    /// An RTM_NEWROUTE message: rtmsg header, then attributes.
    fn route(family: u8, dst_len: u8, kind: u8, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let rtm = RtmsgBuilder::default()
            .rtm_family(RtAddrFamily::from(family))
            .rtm_dst_len(dst_len)
            .rtm_src_len(0)
            .rtm_tos(0)
            .rtm_table(RtTable::Main)
            .rtm_protocol(Rtprot::from(4))
            .rtm_scope(RtScope::Universe)
            .rtm_type(Rtn::from(kind))
            .rtattrs(
                attrs
                    .iter()
                    .map(|(kind, payload)| {
                        RtattrBuilder::default()
                            .rta_type(Rta::from(*kind))
                            .rta_payload(payload.clone())
                            .build()
                            .unwrap()
                    })
                    .collect(),
            )
            .build()
            .unwrap();
        nlmsg(RTM_NEWROUTE, NLM_F_MULTI, 1, &to_bytes(&rtm).unwrap())
    }

    fn attrs_bytes(attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, payload) in attrs {
            out.extend(((4 + payload.len()) as u16).to_ne_bytes());
            out.extend(kind.to_ne_bytes());
            out.extend(payload);
            out.resize(align(out.len()), 0);
        }
        out
    }

    fn nexthop(attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let a = attrs_bytes(attrs);
        let mut out = ((RTNH_LEN + a.len()) as u16).to_ne_bytes().to_vec();
        out.extend([0, 0]); // flags, hops
        out.extend(2i32.to_ne_bytes()); // ifindex
        out.extend(a);
        out
    }

    fn v6(s: &str) -> Vec<u8> {
        s.parse::<Ipv6Addr>().unwrap().octets().to_vec()
    }

    fn sample_routes() -> Vec<u8> {
        const V4: u8 = libc::AF_INET as u8;
        const V6: u8 = libc::AF_INET6 as u8;
        let table = (15u16, 254u32.to_ne_bytes().to_vec()); // RTA_TABLE
        let mut d = Vec::new();
        // default via 10.250.77.1
        d.extend(route(
            V4,
            0,
            RTN_UNICAST,
            &[table.clone(), (RTA_GATEWAY, vec![10, 250, 77, 1])],
        ));
        // 10.250.77.0/24 dev d0 (no gateway) and 192.0.2.0/24 via 10.250.77.9: not default
        d.extend(route(
            V4,
            24,
            RTN_UNICAST,
            &[(RTA_DST, vec![10, 250, 77, 0])],
        ));
        d.extend(route(
            V4,
            24,
            RTN_UNICAST,
            &[
                (RTA_DST, vec![192, 0, 2, 0]),
                (RTA_GATEWAY, vec![10, 250, 77, 9]),
            ],
        ));
        // default via fe80::1 (IPv6), and an unreachable default: no gateway to keep
        d.extend(route(V6, 0, RTN_UNICAST, &[(RTA_GATEWAY, v6("fe80::1"))]));
        d.extend(route(V6, 0, 7, &[(RTA_GATEWAY, v6("fe80::dead"))]));
        // multipath default: nexthop via 203.0.113.1 and via inet6 fe80::2 (RTA_VIA)
        let mut via = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        via.extend(v6("fe80::2"));
        let mut mp = nexthop(&[(RTA_GATEWAY, vec![203, 0, 113, 1])]);
        mp.extend(nexthop(&[(RTA_VIA, via)]));
        d.extend(route(V4, 0, RTN_UNICAST, &[(RTA_MULTIPATH, mp)]));
        // a multicast-routing family (RTNL_FAMILY_IPMR) is not ours
        d.extend(route(
            128,
            0,
            RTN_UNICAST,
            &[(RTA_GATEWAY, vec![1, 1, 1, 1])],
        ));
        d.extend(done(1, 0));
        d
    }

    #[test]
    fn default_routes_give_their_gateways() {
        let d = sample_routes();
        let mut out = Vec::new();
        let flow = walk(&d, 1, "routes", &mut |m| {
            default_route_gateways(m, &mut out)
        })
        .unwrap();
        assert_eq!(flow, Walk::Done);
        assert_eq!(
            out,
            vec![
                ip("10.250.77.1"),
                ip("fe80::1"),
                ip("203.0.113.1"),
                ip("fe80::2")
            ]
        );
        // A lying nexthop length stops the nexthop walk, not the program.
        let mut bad = Vec::new();
        let mut mp = nexthop(&[(RTA_GATEWAY, vec![203, 0, 113, 1])]);
        mp[0] = 200;
        bad.extend(route(
            libc::AF_INET as u8,
            0,
            RTN_UNICAST,
            &[(RTA_MULTIPATH, mp)],
        ));
        let m = Msgs::new(&bad).next().unwrap().unwrap();
        let mut out = Vec::new();
        default_route_gateways(&m, &mut out);
        assert_eq!(out, Vec::<IpAddr>::new());
        // A message shorter than rtmsg.
        let short = nlmsg(RTM_NEWROUTE, 0, 1, &[2, 0, 0]);
        let m = Msgs::new(&short).next().unwrap().unwrap();
        default_route_gateways(&m, &mut out);
        assert_eq!(out, Vec::<IpAddr>::new());
    }

    #[test]
    fn random_and_mutated_route_replies_never_panic() {
        let seed = sample_routes();
        let mut found = 0usize;
        fuzz(&seed, 20_000, &mut |buf| {
            let mut out = Vec::new();
            let _ = walk(buf, 1, "fuzz", &mut |m| default_route_gateways(m, &mut out));
            found += out.len();
        });
        assert!(found > 1000, "mutation kept nothing valid: {found}");
    }

    #[test]
    fn automatic_safelist_never_fails() {
        let missing = std::env::temp_dir().join("fta-no-such-dir/resolv.conf");
        let mut parts = AutoSafelist::default();
        let mut warnings = parts.read_sessions(22);
        warnings.extend(parts.read_routes_and_resolvers(&missing));
        let safe = parts.cidrs();
        // Whatever this host lets us read, loopback is ours.
        assert!(
            safe.contains(&Cidr::host(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            "{safe:?} {warnings:?}"
        );
        assert!(safe.iter().all(|c| c.is_host()));
    }

    /// An RTM_NEWADDR message: ifaddrmsg header, then attributes.
    fn address(family: u8, attrs: &[(Ifa, Vec<u8>)]) -> Vec<u8> {
        let ifa = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::from(family))
            .ifa_prefixlen(24)
            .ifa_scope(RtScope::Universe)
            .ifa_index(2)
            .rtattrs(
                attrs
                    .iter()
                    .map(|(kind, payload)| {
                        RtattrBuilder::default()
                            .rta_type(*kind)
                            .rta_payload(payload.clone())
                            .build()
                            .unwrap()
                    })
                    .collect(),
            )
            .build()
            .unwrap();
        nlmsg(RTM_NEWADDR, NLM_F_MULTI, 1, &to_bytes(&ifa).unwrap())
    }

    #[test]
    fn addresses_are_the_local_end_of_a_link() {
        const V4: u8 = libc::AF_INET as u8;
        let mut d = Vec::new();
        d.extend(address(V4, &[(Ifa::Address, vec![192, 0, 2, 1])]));
        // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours (as getifaddrs reads it).
        d.extend(address(
            V4,
            &[
                (Ifa::Address, vec![198, 51, 100, 9]),
                (Ifa::Local, vec![198, 51, 100, 1]),
                (Ifa::Label, b"ppp0\0".to_vec()),
            ],
        ));
        d.extend(address(
            libc::AF_INET6 as u8,
            &[(Ifa::Address, v6("2001:db8::1"))],
        ));
        // Another family, a wrong length, no address at all: nothing.
        d.extend(address(17, &[(Ifa::Address, vec![1, 2, 3, 4, 5, 6])]));
        d.extend(address(V4, &[(Ifa::Address, v6("2001:db8::2"))]));
        d.extend(address(V4, &[]));
        d.extend(done(1, 0));
        let mut out = Vec::new();
        let flow = walk(&d, 1, "addresses", &mut |m| interface_address(m, &mut out)).unwrap();
        assert_eq!(flow, Walk::Done);
        assert_eq!(
            out,
            vec![ip("192.0.2.1"), ip("198.51.100.1"), ip("2001:db8::1")]
        );
        let mut found = 0usize;
        fuzz(&d, 20_000, &mut |buf| {
            let mut out = Vec::new();
            let _ = walk(buf, 1, "fuzz", &mut |m| interface_address(m, &mut out));
            found += out.len();
        });
        assert!(found > 1000, "mutation kept nothing valid: {found}");
    }

    #[test]
    fn loopback_is_one_of_ours() {
        let own = own_addresses().unwrap();
        assert!(own.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{own:?}");
    }
}
