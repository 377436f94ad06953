//! The expression vocabulary of our rules, as plain data, and its rendering as nft rule text.
//! A rule is a list of these; the netlink layer encodes and decodes the same list, so what
//! `rules dump` prints is derived from what the kernel holds, not from what we meant.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::proto::{
    IPPROTO_AH, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IPIP, IPPROTO_IPV6,
    IPPROTO_PIM, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_VRRP,
};

/// What a rule does with a packet once its matches hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Leave our chain: the packet goes on to the rest of the ruleset (never `accept`).
    Return,
    Drop,
}

/// Packet metadata a rule can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaKey {
    NfProto,
    L4Proto,
}

/// Header fields a rule can load: (base, offset, length) in the kernel's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Ip4Saddr,
    Ip6Saddr,
    Ip4FragOff,
    TcpFlags,
    TcpDport,
    UdpSport,
    UdpDport,
}

pub(crate) const BASE_NETWORK: u32 = 1;
pub(crate) const BASE_TRANSPORT: u32 = 2;

impl Field {
    pub(crate) fn location(self) -> (u32, u32, u32) {
        match self {
            Field::Ip4Saddr => (BASE_NETWORK, 12, 4),
            Field::Ip6Saddr => (BASE_NETWORK, 8, 16),
            Field::Ip4FragOff => (BASE_NETWORK, 6, 2),
            Field::TcpFlags => (BASE_TRANSPORT, 13, 1),
            Field::TcpDport | Field::UdpDport => (BASE_TRANSPORT, 2, 2),
            Field::UdpSport => (BASE_TRANSPORT, 0, 2),
        }
    }

    /// The field at a location; transport fields need the rule's protocol to be told apart.
    pub(crate) fn at(base: u32, offset: u32, len: u32, l4proto: Option<u8>) -> Option<Field> {
        let field = match (base, offset, len, l4proto) {
            (BASE_NETWORK, 12, 4, _) => Field::Ip4Saddr,
            (BASE_NETWORK, 8, 16, _) => Field::Ip6Saddr,
            (BASE_NETWORK, 6, 2, _) => Field::Ip4FragOff,
            (BASE_TRANSPORT, 13, 1, Some(IPPROTO_TCP)) => Field::TcpFlags,
            (BASE_TRANSPORT, 2, 2, Some(IPPROTO_TCP)) => Field::TcpDport,
            (BASE_TRANSPORT, 2, 2, Some(IPPROTO_UDP)) => Field::UdpDport,
            (BASE_TRANSPORT, 0, 2, Some(IPPROTO_UDP)) => Field::UdpSport,
            _ => return None,
        };
        Some(field)
    }

    fn name(self) -> &'static str {
        match self {
            Field::Ip4Saddr => "ip saddr",
            Field::Ip6Saddr => "ip6 saddr",
            Field::Ip4FragOff => "ip frag-off",
            Field::TcpFlags => "tcp flags",
            Field::TcpDport => "tcp dport",
            Field::UdpSport => "udp sport",
            Field::UdpDport => "udp dport",
        }
    }
}

pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_IPV6: u8 = 10;
/// `ct state` bits as the kernel's state bitmask.
pub(crate) const CT_STATE_INVALID: u32 = 1;
pub(crate) const CT_STATE_ESTABLISHED: u32 = 1 << 1;
pub(crate) const CT_STATE_RELATED: u32 = 1 << 2;
pub(crate) const CT_STATE_NEW: u32 = 1 << 3;
pub(crate) const CT_STATE_UNTRACKED: u32 = 1 << 6;
/// Every state but established and related: a packet of no connection of ours.
pub(crate) const CT_STATE_UNSOLICITED: u32 = CT_STATE_INVALID | CT_STATE_NEW | CT_STATE_UNTRACKED;

/// The state a meter keeps per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stateful {
    /// Packets per second of this key (with `over`: matches past the rate).
    Limit { rate: u64, burst: u32, over: bool },
    /// Connections this key holds in conntrack (with `over`: matches past the count).
    ConnLimit { count: u32, over: bool },
}

impl Stateful {
    fn render(self) -> String {
        match self {
            Stateful::Limit { rate, burst, over } => {
                let over = if over { "over " } else { "" };
                format!("limit rate {over}{rate}/second burst {burst} packets")
            }
            Stateful::ConnLimit { count, over } => {
                let over = if over { "over " } else { "" };
                format!("ct count {over}{count}")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Neq,
    /// Less than or equal (the register and the value compared as big-endian numbers).
    Lte,
}

/// One expression. Loads go to register 1, which the next expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Meta(MetaKey),
    /// `ct state`, as a 4-byte host-order bitmask.
    CtState,
    /// `socket transparent`: the kernel looks up the socket that would take the packet and
    /// loads whether it is transparent (1 byte, 0 or 1); with no such socket the rule stops
    /// there (does not match).
    SocketTransparent,
    Payload(Field),
    /// Whether an IPv6 fragment header is present (1 byte, 1 or 0).
    Exthdr6Frag,
    /// `reg & mask` (xor 0); the mask is in register byte order.
    Bitwise(Vec<u8>),
    Cmp(CmpOp, Vec<u8>),
    /// The register's value is (or with `invert`, is not) in the named set.
    Lookup {
        set: String,
        invert: bool,
    },
    /// Count in the named counter that the register's value maps to in the named map.
    CounterMap(String),
    /// Count in a named counter.
    NamedCounter(String),
    /// An anonymous counter (values as listed; zero in a spec).
    Counter {
        packets: u64,
        bytes: u64,
    },
    /// Matches up to `rate` packets per second (with a burst); with `over`, the packets past it.
    Limit {
        rate: u64,
        burst: u32,
        over: bool,
    },
    /// Add the register's value to a dynamic set (a meter) with a stateful expression of its
    /// own per element; the rule goes on only when that expression matches.
    Dynset {
        set: String,
        stateful: Stateful,
    },
    /// Add the register's value to a set with timeouts (the set's own timeout), no state.
    SetAdd(String),
    /// Copy the packet's first `snaplen` bytes to an NFLOG group; a `qthreshold` other than
    /// 0 overrides the instance's batching (1: every message is sent at once).
    Log {
        group: u16,
        snaplen: u32,
        qthreshold: u16,
    },
    /// Keep the packet out of conntrack (valid only before conntrack, i.e. our prerouting
    /// chain at -310).
    Notrack,
    /// The SYN proxy: answers a SYN with a SYN cookie and, on a valid cookie in the ACK, opens
    /// the connection to the local server with these options (input or forward hook only).
    Synproxy(Synproxy),
    Verdict(Verdict),
}

/// The TCP options the SYN proxy announces for the server behind it: its MSS and window
/// scale (always sent), timestamps and selective acknowledgements when on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Synproxy {
    pub(crate) mss: u16,
    pub(crate) wscale: u8,
    pub(crate) timestamp: bool,
    pub(crate) sack_perm: bool,
}

impl Synproxy {
    fn render(self) -> String {
        let mut text = format!("synproxy mss {} wscale {}", self.mss, self.wscale);
        if self.timestamp {
            text.push_str(" timestamp");
        }
        if self.sack_perm {
            text.push_str(" sack-perm");
        }
        text
    }
}

impl Expr {
    /// An anonymous counter as a spec has it (our rules name theirs; the kernel may list
    /// anonymous ones, e.g. in a table an older version wrote).
    #[cfg(test)]
    pub(crate) fn counter() -> Expr {
        Expr::Counter {
            packets: 0,
            bytes: 0,
        }
    }

    pub(crate) fn meta_is(key: MetaKey, value: u8) -> [Expr; 2] {
        [Expr::Meta(key), Expr::Cmp(CmpOp::Eq, vec![value])]
    }
}

/// Two rules are the same when their expressions are, whatever their counters hold.
pub(crate) fn same_rule(a: &[Expr], b: &[Expr]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Expr::Counter { .. }, Expr::Counter { .. }) => true,
            _ => x == y,
        })
}

/// The rule as nft text, or None when it contains something outside our idioms.
pub(crate) fn render_rule(exprs: &[Expr]) -> Option<String> {
    let mut out = String::new();
    let mut rest = exprs;
    while !rest.is_empty() {
        let (text, used) = render_statement(rest)?;
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&text);
        rest = &rest[used..];
    }
    Some(out)
}

/// Renders the statement at the start of `exprs`; returns it and how many expressions it used.
fn render_statement(exprs: &[Expr]) -> Option<(String, usize)> {
    use Expr::*;
    let done = |text: String, used| Some((text, used));
    match exprs {
        [Meta(key), Cmp(op, data), ..] => {
            let value = *data.first()?;
            let (name, value) = match key {
                MetaKey::NfProto => ("meta nfproto", nfproto_name(value)?.to_string()),
                MetaKey::L4Proto => ("meta l4proto", l4proto_name(value)),
            };
            done(format!("{name} {}{value}", op_text(*op)), 2)
        }
        [Meta(key), Lookup { set, invert }, ..] => {
            let name = match key {
                MetaKey::NfProto => "meta nfproto",
                MetaKey::L4Proto => "meta l4proto",
            };
            let op = if *invert { "!= " } else { "" };
            done(format!("{name} {op}@{set}"), 2)
        }
        [Meta(key), Dynset { set, stateful }, ..] => {
            let name = meta_name(*key);
            done(format!("add @{set} {{ {name} {} }}", stateful.render()), 2)
        }
        [Meta(key), SetAdd(set), ..] => done(format!("add @{set} {{ {} }}", meta_name(*key)), 2),
        [Meta(key), CounterMap(map), ..] => {
            let name = match key {
                MetaKey::NfProto => "meta nfproto",
                MetaKey::L4Proto => "meta l4proto",
            };
            done(format!("counter name {name} map @{map}"), 2)
        }
        [CtState, Bitwise(mask), Cmp(CmpOp::Neq, zero), ..] if zero.iter().all(|&b| b == 0) => {
            let mask = u32::from_ne_bytes(mask.as_slice().try_into().ok()?);
            done(format!("ct state {}", ct_state_names(mask)?), 3)
        }
        [SocketTransparent, Cmp(op, value), ..] => {
            let value = *value.first()?;
            done(format!("socket transparent {}{value}", op_text(*op)), 2)
        }
        [Exthdr6Frag, Cmp(CmpOp::Eq, one), ..] if one.as_slice() == [1] => {
            done("exthdr frag exists".to_string(), 2)
        }
        [Payload(field), Bitwise(mask), Cmp(op, data), ..] => {
            let text = match field {
                Field::TcpFlags => format!(
                    "tcp flags & ({}) {}{}",
                    tcp_flag_names(*mask.first()?),
                    op_text_explicit(*op),
                    tcp_flag_names(*data.first()?)
                ),
                Field::Ip4FragOff => format!(
                    "ip frag-off & 0x{:x} {}{}",
                    u16::from_be_bytes(mask.as_slice().try_into().ok()?),
                    op_text_explicit(*op),
                    u16::from_be_bytes(data.as_slice().try_into().ok()?)
                ),
                _ => return None,
            };
            done(text, 3)
        }
        [Payload(field), Cmp(op, data), ..] => done(
            format!(
                "{} {}{}",
                field.name(),
                op_text(*op),
                field_value(*field, data)?
            ),
            2,
        ),
        [Payload(field), Lookup { set, invert }, ..] => {
            let op = if *invert { "!= " } else { "" };
            done(format!("{} {op}@{set}", field.name()), 2)
        }
        [Payload(field), Dynset { set, stateful }, ..] => done(
            format!("add @{set} {{ {} {} }}", field.name(), stateful.render()),
            2,
        ),
        [Payload(field), CounterMap(map), ..] => {
            done(format!("counter name {} map @{map}", field.name()), 2)
        }
        [NamedCounter(name), ..] => done(format!("counter name \"{name}\""), 1),
        [Counter { packets, bytes }, ..] => {
            done(format!("counter packets {packets} bytes {bytes}"), 1)
        }
        [Limit { rate, burst, over }, ..] => {
            let over = if *over { "over " } else { "" };
            done(
                format!("limit rate {over}{rate}/second burst {burst} packets"),
                1,
            )
        }
        [Log {
            group,
            snaplen,
            qthreshold,
        }, ..] => {
            let mut text = format!("log group {group} snaplen {snaplen}");
            if *qthreshold > 0 {
                let _ = write!(text, " queue-threshold {qthreshold}");
            }
            done(text, 1)
        }
        [Notrack, ..] => done("notrack".to_string(), 1),
        [Synproxy(options), ..] => done(options.render(), 1),
        [Verdict(v), ..] => done(
            match v {
                self::Verdict::Return => "return",
                self::Verdict::Drop => "drop",
            }
            .to_string(),
            1,
        ),
        _ => None,
    }
}

fn meta_name(key: MetaKey) -> &'static str {
    match key {
        MetaKey::NfProto => "meta nfproto",
        MetaKey::L4Proto => "meta l4proto",
    }
}

fn op_text(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "",
        CmpOp::Neq => "!= ",
        CmpOp::Lte => "<= ",
    }
}

fn op_text_explicit(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "== ",
        CmpOp::Neq => "!= ",
        CmpOp::Lte => "<= ",
    }
}

fn nfproto_name(value: u8) -> Option<&'static str> {
    match value {
        NFPROTO_IPV4 => Some("ipv4"),
        NFPROTO_IPV6 => Some("ipv6"),
        _ => None,
    }
}

/// nft's name for an IP protocol number.
pub(crate) fn l4proto_name(value: u8) -> String {
    ip_proto_name(value).map_or_else(|| value.to_string(), str::to_string)
}

/// The name of an IP protocol nft and /etc/protocols know, for the usual ones.
pub(crate) fn ip_proto_name(value: u8) -> Option<&'static str> {
    Some(match value {
        IPPROTO_ICMP => "icmp",
        IPPROTO_IPIP => "ipencap",
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_IPV6 => "ipv6",
        IPPROTO_GRE => "gre",
        IPPROTO_ESP => "esp",
        IPPROTO_AH => "ah",
        IPPROTO_ICMPV6 => "ipv6-icmp",
        IPPROTO_PIM => "pim",
        IPPROTO_VRRP => "vrrp",
        IPPROTO_SCTP => "sctp",
        _ => return None,
    })
}

/// nft's names for a `ct state` mask (`invalid,new`); None for bits we never match on.
fn ct_state_names(mask: u32) -> Option<String> {
    const NAMES: [(u32, &str); 5] = [
        (CT_STATE_INVALID, "invalid"),
        (CT_STATE_ESTABLISHED, "established"),
        (CT_STATE_RELATED, "related"),
        (CT_STATE_NEW, "new"),
        (CT_STATE_UNTRACKED, "untracked"),
    ];
    let known = NAMES.iter().fold(0, |all, (b, _)| all | b);
    if mask == 0 || mask & !known != 0 {
        return None;
    }
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| mask & b != 0)
        .map(|(_, n)| *n)
        .collect();
    Some(names.join(","))
}

fn tcp_flag_names(bits: u8) -> String {
    const NAMES: [(u8, &str); 8] = [
        (0x01, "fin"),
        (0x02, "syn"),
        (0x04, "rst"),
        (0x08, "psh"),
        (0x10, "ack"),
        (0x20, "urg"),
        (0x40, "ecn"),
        (0x80, "cwr"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "0x0".to_string()
    } else {
        names.join(" | ")
    }
}

fn field_value(field: Field, data: &[u8]) -> Option<String> {
    let mut out = String::new();
    match field {
        Field::Ip4Saddr => {
            let _ = write!(out, "{}", IpAddr::from(<[u8; 4]>::try_from(data).ok()?));
        }
        Field::Ip6Saddr => {
            let _ = write!(out, "{}", IpAddr::from(<[u8; 16]>::try_from(data).ok()?));
        }
        Field::TcpDport | Field::UdpDport | Field::UdpSport | Field::Ip4FragOff => {
            let _ = write!(out, "{}", u16::from_be_bytes(data.try_into().ok()?));
        }
        Field::TcpFlags => out = tcp_flag_names(*data.first()?),
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idioms_render_as_nft_writes_them() {
        let mut ban = Expr::meta_is(MetaKey::NfProto, NFPROTO_IPV4).to_vec();
        ban.extend([
            Expr::Payload(Field::Ip4Saddr),
            Expr::Lookup {
                set: "ban4".into(),
                invert: false,
            },
            Expr::counter(),
            Expr::Verdict(Verdict::Drop),
        ]);
        assert_eq!(
            render_rule(&ban).unwrap(),
            "meta nfproto ipv4 ip saddr @ban4 counter packets 0 bytes 0 drop"
        );
        let mut syn = Expr::meta_is(MetaKey::L4Proto, IPPROTO_TCP).to_vec();
        syn.extend([
            Expr::Payload(Field::TcpFlags),
            Expr::Bitwise(vec![0x12]),
            Expr::Cmp(CmpOp::Eq, vec![0x02]),
            Expr::NamedCounter("tcp_syn".into()),
        ]);
        assert_eq!(
            render_rule(&syn).unwrap(),
            "meta l4proto tcp tcp flags & (syn | ack) == syn counter name \"tcp_syn\""
        );
        let new = [
            Expr::CtState,
            Expr::Bitwise(CT_STATE_NEW.to_ne_bytes().to_vec()),
            Expr::Cmp(CmpOp::Neq, vec![0; 4]),
            Expr::Meta(MetaKey::L4Proto),
            Expr::Cmp(CmpOp::Eq, vec![IPPROTO_UDP]),
            Expr::Payload(Field::UdpDport),
            Expr::CounterMap("new_udp".into()),
        ];
        assert_eq!(
            render_rule(&new).unwrap(),
            "ct state new meta l4proto udp counter name udp dport map @new_udp"
        );
    }

    #[test]
    fn synproxy_and_notrack_render_as_nft_lists_them() {
        let mut syn = Expr::meta_is(MetaKey::L4Proto, IPPROTO_TCP).to_vec();
        syn.extend([
            Expr::Payload(Field::TcpDport),
            Expr::Lookup {
                set: "syn_proxy".into(),
                invert: false,
            },
            Expr::Notrack,
        ]);
        assert_eq!(
            render_rule(&syn).unwrap(),
            "meta l4proto tcp tcp dport @syn_proxy notrack"
        );
        let proxy = Expr::Synproxy(Synproxy {
            mss: 1460,
            wscale: 7,
            timestamp: true,
            sack_perm: true,
        });
        assert_eq!(
            render_rule(&[proxy]).unwrap(),
            "synproxy mss 1460 wscale 7 timestamp sack-perm"
        );
    }

    #[test]
    fn unknown_shapes_are_not_guessed() {
        assert_eq!(render_rule(&[Expr::Bitwise(vec![1])]), None);
        assert_eq!(
            render_rule(&[Expr::Meta(MetaKey::NfProto), Expr::Cmp(CmpOp::Eq, vec![99])]),
            None
        );
    }

    #[test]
    fn counters_do_not_make_rules_differ() {
        let a = [Expr::counter(), Expr::Verdict(Verdict::Drop)];
        let b = [
            Expr::Counter {
                packets: 5,
                bytes: 300,
            },
            Expr::Verdict(Verdict::Drop),
        ];
        assert!(same_rule(&a, &b));
        assert!(!same_rule(&a, &b[..1]));
    }
}
