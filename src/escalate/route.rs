//! What ftagent asks its upstream routers for, as plain data: a blackhole route (RTBH, RFC
//! 7999) for an attacked address, or a FlowSpec rule (RFC 8955/8956) matching the attack.

use std::fmt;

use crate::addr::Cidr;
use crate::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

/// One announcement's content. Its identity towards the BGP daemon is what it matches (the
/// prefix, or the FlowSpec match); the action is part of it so a changed action replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Route {
    /// The attacked address as a /32 (/128) with the BLACKHOLE community.
    Blackhole(Cidr),
    FlowSpec(FlowRule),
}

/// A FlowSpec rule: every present component must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FlowRule {
    pub(crate) destination: Cidr,
    pub(crate) source: Option<Cidr>,
    /// IP protocol (IPv6: next header).
    pub(crate) proto: Option<u8>,
    /// Inclusive port ranges (a single port is `(p, p)`).
    pub(crate) dst_ports: Option<(u16, u16)>,
    pub(crate) src_ports: Option<(u16, u16)>,
    /// Matches IP fragments (FlowSpec `fragment is-fragment`).
    pub(crate) fragments: bool,
    pub(crate) action: Action,
}

/// What a FlowSpec rule does with the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Action {
    Discard,
    /// Traffic-rate, in bytes per second (FlowSpec's unit).
    RateLimit(u64),
}

impl Route {
    pub(crate) fn is_ipv4(&self) -> bool {
        match self {
            Route::Blackhole(c) => c.is_ipv4(),
            Route::FlowSpec(f) => f.destination.is_ipv4(),
        }
    }

    /// `rtbh` or `flowspec`, for events.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Route::Blackhole(_) => "rtbh",
            Route::FlowSpec(_) => "flowspec",
        }
    }

    pub(crate) fn destination(&self) -> Cidr {
        match self {
            Route::Blackhole(c) => *c,
            Route::FlowSpec(f) => f.destination,
        }
    }
}

/// A protocol number by name where it has a common one.
pub(crate) fn proto_name(proto: u8) -> Option<&'static str> {
    match proto {
        IPPROTO_ICMP => Some("icmp"),
        IPPROTO_TCP => Some("tcp"),
        IPPROTO_UDP => Some("udp"),
        IPPROTO_ICMPV6 => Some("icmpv6"),
        _ => None,
    }
}

/// A prefix with its length always written (`192.0.2.1/32`), as BGP daemons want it.
pub(crate) fn prefix_text(c: Cidr) -> String {
    format!("{}/{}", c.addr(), c.prefix_len())
}

/// `8000-8100`, or `53` for a single port.
pub(crate) fn port_text((first, last): (u16, u16)) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

impl fmt::Display for Route {
    /// One line for logs: `rtbh 10.0.0.1/32`, `flowspec destination 10.0.0.1/32 protocol udp
    /// destination-port 53 discard`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Blackhole(c) => write!(f, "rtbh {}", prefix_text(*c)),
            Route::FlowSpec(r) => {
                write!(f, "flowspec destination {}", prefix_text(r.destination))?;
                if let Some(s) = r.source {
                    write!(f, " source {}", prefix_text(s))?;
                }
                if let Some(p) = r.proto {
                    match proto_name(p) {
                        Some(name) => write!(f, " protocol {name}")?,
                        None => write!(f, " protocol {p}")?,
                    }
                }
                if let Some(p) = r.dst_ports {
                    write!(f, " destination-port {}", port_text(p))?;
                }
                if let Some(p) = r.src_ports {
                    write!(f, " source-port {}", port_text(p))?;
                }
                if r.fragments {
                    write!(f, " fragment")?;
                }
                match r.action {
                    Action::Discard => write!(f, " discard"),
                    Action::RateLimit(b) => write!(f, " rate-limit {b} bytes/s"),
                }
            }
        }
    }
}
