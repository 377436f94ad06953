//! nf_tables encoding of our rule expressions (`ruleset::expr::Expr`), and their decoding from
//! the kernel's rule listings. rustables cannot express counter maps, named counters, limits,
//! logging or extension headers, so every rule goes through this one encoder.

use super::nft::abi::{NFTA_LIST_ELEM, NFT_OBJECT_COUNTER};
use super::wire::{Attrs, Writer};
use crate::proto::IPPROTO_FRAGMENT;
use crate::ruleset::expr::{CmpOp, Expr, Field, MetaKey, Stateful, Synproxy, Verdict};

// Attributes of linux/netfilter/nf_tables.h (enum nft_*_attributes), by expression.
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_SOCKET_KEY: u16 = 1;
const NFTA_SOCKET_DREG: u16 = 2;
const NFTA_SOCKET_LEVEL: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_EXTHDR_DREG: u16 = 1;
const NFTA_EXTHDR_TYPE: u16 = 2;
const NFTA_EXTHDR_OFFSET: u16 = 3;
const NFTA_EXTHDR_LEN: u16 = 4;
const NFTA_EXTHDR_FLAGS: u16 = 5;
const NFTA_EXTHDR_OP: u16 = 6;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_BITWISE_OP: u16 = 6;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFTA_OBJREF_IMM_TYPE: u16 = 1;
const NFTA_OBJREF_IMM_NAME: u16 = 2;
const NFTA_OBJREF_SET_SREG: u16 = 3;
const NFTA_OBJREF_SET_NAME: u16 = 4;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_LIMIT_RATE: u16 = 1;
const NFTA_LIMIT_UNIT: u16 = 2;
const NFTA_LIMIT_BURST: u16 = 3;
const NFTA_LIMIT_TYPE: u16 = 4;
const NFTA_LIMIT_FLAGS: u16 = 5;
const NFTA_CONNLIMIT_COUNT: u16 = 1;
const NFTA_CONNLIMIT_FLAGS: u16 = 2;
const NFTA_DYNSET_SET_NAME: u16 = 1;
const NFTA_DYNSET_OP: u16 = 3;
const NFTA_DYNSET_SREG_KEY: u16 = 4;
const NFTA_DYNSET_SREG_DATA: u16 = 5;
const NFTA_DYNSET_EXPR: u16 = 7;
const NFTA_LOG_GROUP: u16 = 1;
const NFTA_LOG_SNAPLEN: u16 = 3;
const NFTA_LOG_QTHRESHOLD: u16 = 4;
const NFTA_SYNPROXY_MSS: u16 = 1;
const NFTA_SYNPROXY_WSCALE: u16 = 2;
const NFTA_SYNPROXY_FLAGS: u16 = 3;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
/// The 128-bit register 1 (the verdict register is 0).
const REG_1: u32 = 1;
const REG_VERDICT: u32 = 0;

const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_CMP_LTE: u32 = 3;
const NFT_SOCKET_TRANSPARENT: u32 = 0;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFT_LIMIT_PKTS: u32 = 0;
/// NFTA_LIMIT_UNIT is the rate's period in seconds: ours are per second.
const LIMIT_PER_SECOND: u64 = 1;
const NFT_LIMIT_F_INV: u32 = 1;
const NFT_CONNLIMIT_F_INV: u32 = 1;
const NFT_DYNSET_OP_ADD: u32 = 0;
const NFT_EXTHDR_F_PRESENT: u32 = 1;
const NFT_EXTHDR_OP_IPV6: u32 = 0;
/// `NF_SYNPROXY_OPT_*`: the options the SYN proxy sends (MSS and window scale always ours).
const SYNPROXY_MSS: u32 = 0x01;
const SYNPROXY_WSCALE: u32 = 0x02;
const SYNPROXY_SACK_PERM: u32 = 0x04;
const SYNPROXY_TIMESTAMP: u32 = 0x08;
const NF_DROP: i32 = 0;
const NFT_RETURN: i32 = -5;

/// Writes the expression list of a rule (the content of NFTA_RULE_EXPRESSIONS).
pub(crate) fn encode_all(w: &mut Writer, exprs: &[Expr]) {
    for e in exprs {
        let elem = w.nest_start(NFTA_LIST_ELEM);
        encode(w, e);
        let _ = w.nest_end(elem);
    }
}

fn encode(w: &mut Writer, e: &Expr) {
    let name = match e {
        Expr::Meta(_) => "meta",
        Expr::CtState => "ct",
        Expr::SocketTransparent => "socket",
        Expr::Payload(_) => "payload",
        Expr::Exthdr6Frag => "exthdr",
        Expr::Bitwise(_) => "bitwise",
        Expr::Cmp(..) => "cmp",
        Expr::Lookup { .. } => "lookup",
        Expr::CounterMap(_) | Expr::NamedCounter(_) => "objref",
        Expr::Counter { .. } => "counter",
        Expr::Limit { .. } => "limit",
        Expr::Log { .. } => "log",
        Expr::Dynset { .. } | Expr::SetAdd(_) => "dynset",
        Expr::Notrack => "notrack",
        Expr::Synproxy(_) => "synproxy",
        Expr::Verdict(_) => "immediate",
    };
    w.attr_str(NFTA_EXPR_NAME, name);
    let d = w.nest_start(NFTA_EXPR_DATA);
    match e {
        Expr::Meta(key) => {
            w.attr_be32(NFTA_META_DREG, REG_1);
            w.attr_be32(NFTA_META_KEY, meta_key(*key));
        }
        Expr::CtState => {
            w.attr_be32(NFTA_CT_DREG, REG_1);
            w.attr_be32(NFTA_CT_KEY, NFT_CT_STATE);
        }
        Expr::SocketTransparent => {
            w.attr_be32(NFTA_SOCKET_KEY, NFT_SOCKET_TRANSPARENT);
            w.attr_be32(NFTA_SOCKET_DREG, REG_1);
        }
        Expr::Payload(field) => {
            let (base, offset, len) = field.location();
            w.attr_be32(NFTA_PAYLOAD_DREG, REG_1);
            w.attr_be32(NFTA_PAYLOAD_BASE, base);
            w.attr_be32(NFTA_PAYLOAD_OFFSET, offset);
            w.attr_be32(NFTA_PAYLOAD_LEN, len);
        }
        Expr::Exthdr6Frag => {
            w.attr_be32(NFTA_EXTHDR_DREG, REG_1);
            w.attr(NFTA_EXTHDR_TYPE, &[IPPROTO_FRAGMENT]);
            w.attr_be32(NFTA_EXTHDR_OFFSET, 0);
            w.attr_be32(NFTA_EXTHDR_LEN, 1);
            w.attr_be32(NFTA_EXTHDR_FLAGS, NFT_EXTHDR_F_PRESENT);
            w.attr_be32(NFTA_EXTHDR_OP, NFT_EXTHDR_OP_IPV6);
        }
        Expr::Bitwise(mask) => {
            w.attr_be32(NFTA_BITWISE_SREG, REG_1);
            w.attr_be32(NFTA_BITWISE_DREG, REG_1);
            w.attr_be32(NFTA_BITWISE_LEN, mask.len() as u32);
            data_value(w, NFTA_BITWISE_MASK, mask);
            data_value(w, NFTA_BITWISE_XOR, &vec![0; mask.len()]);
        }
        Expr::Cmp(op, value) => {
            w.attr_be32(NFTA_CMP_SREG, REG_1);
            w.attr_be32(
                NFTA_CMP_OP,
                match op {
                    CmpOp::Eq => NFT_CMP_EQ,
                    CmpOp::Neq => NFT_CMP_NEQ,
                    CmpOp::Lte => NFT_CMP_LTE,
                },
            );
            data_value(w, NFTA_CMP_DATA, value);
        }
        Expr::Lookup { set, invert } => {
            w.attr_str(NFTA_LOOKUP_SET, set);
            w.attr_be32(NFTA_LOOKUP_SREG, REG_1);
            if *invert {
                w.attr_be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
            }
        }
        Expr::CounterMap(map) => {
            w.attr_be32(NFTA_OBJREF_SET_SREG, REG_1);
            w.attr_str(NFTA_OBJREF_SET_NAME, map);
        }
        Expr::NamedCounter(name) => {
            w.attr_be32(NFTA_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER);
            w.attr_str(NFTA_OBJREF_IMM_NAME, name);
        }
        Expr::Counter { packets, bytes } => {
            w.attr_be64(NFTA_COUNTER_BYTES, *bytes);
            w.attr_be64(NFTA_COUNTER_PACKETS, *packets);
        }
        Expr::Limit { rate, burst, over } => {
            limit(w, *rate, *burst, *over);
        }
        Expr::Dynset { set, stateful } => {
            w.attr_str(NFTA_DYNSET_SET_NAME, set);
            w.attr_be32(NFTA_DYNSET_OP, NFT_DYNSET_OP_ADD);
            w.attr_be32(NFTA_DYNSET_SREG_KEY, REG_1);
            let nested = w.nest_start(NFTA_DYNSET_EXPR);
            let (name, a, b, over) = match *stateful {
                Stateful::Limit { rate, burst, over } => ("limit", rate, burst, over),
                Stateful::ConnLimit { count, over } => ("connlimit", u64::from(count), 0, over),
            };
            w.attr_str(NFTA_EXPR_NAME, name);
            let data = w.nest_start(NFTA_EXPR_DATA);
            if name == "limit" {
                limit(w, a, b, over);
            } else {
                w.attr_be32(NFTA_CONNLIMIT_COUNT, a as u32);
                w.attr_be32(
                    NFTA_CONNLIMIT_FLAGS,
                    if over { NFT_CONNLIMIT_F_INV } else { 0 },
                );
            }
            let _ = w.nest_end(data);
            let _ = w.nest_end(nested);
        }
        Expr::SetAdd(set) => {
            w.attr_str(NFTA_DYNSET_SET_NAME, set);
            w.attr_be32(NFTA_DYNSET_OP, NFT_DYNSET_OP_ADD);
            w.attr_be32(NFTA_DYNSET_SREG_KEY, REG_1);
        }
        Expr::Log {
            group,
            snaplen,
            qthreshold,
        } => {
            w.attr(NFTA_LOG_GROUP, &group.to_be_bytes()); // be16
            w.attr_be32(NFTA_LOG_SNAPLEN, *snaplen);
            if *qthreshold > 0 {
                w.attr(NFTA_LOG_QTHRESHOLD, &qthreshold.to_be_bytes()); // be16
            }
        }
        Expr::Notrack => {}
        Expr::Synproxy(options) => {
            w.attr(NFTA_SYNPROXY_MSS, &options.mss.to_be_bytes()); // be16
            w.attr(NFTA_SYNPROXY_WSCALE, &[options.wscale]); // u8
            let mut flags = SYNPROXY_MSS | SYNPROXY_WSCALE;
            if options.timestamp {
                flags |= SYNPROXY_TIMESTAMP;
            }
            if options.sack_perm {
                flags |= SYNPROXY_SACK_PERM;
            }
            w.attr_be32(NFTA_SYNPROXY_FLAGS, flags);
        }
        Expr::Verdict(v) => {
            w.attr_be32(NFTA_IMMEDIATE_DREG, REG_VERDICT);
            let data = w.nest_start(NFTA_IMMEDIATE_DATA);
            let verdict = w.nest_start(NFTA_DATA_VERDICT);
            let code = match v {
                Verdict::Drop => NF_DROP,
                Verdict::Return => NFT_RETURN,
            };
            w.attr_be32(NFTA_VERDICT_CODE, code as u32);
            let _ = w.nest_end(verdict);
            let _ = w.nest_end(data);
        }
    }
    let _ = w.nest_end(d);
}

/// A `limit` expression's attributes: packets per second, alone or as a set's expression.
fn limit(w: &mut Writer, rate: u64, burst: u32, over: bool) {
    w.attr_be64(NFTA_LIMIT_RATE, rate);
    w.attr_be64(NFTA_LIMIT_UNIT, LIMIT_PER_SECOND);
    w.attr_be32(NFTA_LIMIT_BURST, burst);
    w.attr_be32(NFTA_LIMIT_TYPE, NFT_LIMIT_PKTS);
    w.attr_be32(NFTA_LIMIT_FLAGS, if over { NFT_LIMIT_F_INV } else { 0 });
}

fn data_value(w: &mut Writer, kind: u16, bytes: &[u8]) {
    let n = w.nest_start(kind);
    w.attr(NFTA_DATA_VALUE, bytes);
    let _ = w.nest_end(n);
}

fn meta_key(key: MetaKey) -> u32 {
    match key {
        MetaKey::NfProto => NFT_META_NFPROTO,
        MetaKey::L4Proto => NFT_META_L4PROTO,
    }
}

/// Decodes a listed rule's expressions. Err carries the expression names when something is
/// outside our vocabulary.
pub(crate) fn decode_all(list: Attrs) -> Result<Vec<Expr>, String> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    let mut failed = false;
    // Transport fields are told apart by the protocol the rule matched before them.
    let mut l4proto = None;
    let mut last_meta = None;
    for elem in list.filter(|a| a.kind() == NFTA_LIST_ELEM) {
        let name = elem
            .nested()
            .get(NFTA_EXPR_NAME)
            .and_then(|a| a.str())
            .unwrap_or("?");
        names.push(name.to_string());
        let data = elem
            .nested()
            .get(NFTA_EXPR_DATA)
            .map(|d| d.nested())
            .unwrap_or(Attrs::new(&[]));
        match decode(name, data, l4proto) {
            Some(e) => {
                if let (Some(MetaKey::L4Proto), Expr::Cmp(CmpOp::Eq, v)) = (last_meta, &e) {
                    l4proto = v.first().copied();
                }
                last_meta = match e {
                    Expr::Meta(k) => Some(k),
                    _ => None,
                };
                out.push(e);
            }
            None => failed = true,
        }
    }
    if failed {
        Err(format!("expressions [{}]", names.join(", ")))
    } else {
        Ok(out)
    }
}

fn decode(name: &str, a: Attrs, l4proto: Option<u8>) -> Option<Expr> {
    let be32 = |k| a.get(k).and_then(|x| x.be32());
    let be64 = |k| a.get(k).and_then(|x| x.be64());
    let value = |k| {
        a.get(k)
            .and_then(|x| x.nested().get(NFTA_DATA_VALUE))
            .map(|v| v.bytes().to_vec())
    };
    let e = match name {
        "meta" => match be32(NFTA_META_KEY)? {
            NFT_META_NFPROTO => Expr::Meta(MetaKey::NfProto),
            NFT_META_L4PROTO => Expr::Meta(MetaKey::L4Proto),
            _ => return None,
        },
        "ct" => (be32(NFTA_CT_KEY)? == NFT_CT_STATE && a.get(NFTA_CT_DREG).is_some())
            .then_some(Expr::CtState)?,
        "socket" => (be32(NFTA_SOCKET_KEY)? == NFT_SOCKET_TRANSPARENT
            && be32(NFTA_SOCKET_LEVEL).unwrap_or(0) == 0)
            .then_some(Expr::SocketTransparent)?,
        "payload" => Expr::Payload(Field::at(
            be32(NFTA_PAYLOAD_BASE)?,
            be32(NFTA_PAYLOAD_OFFSET)?,
            be32(NFTA_PAYLOAD_LEN)?,
            l4proto,
        )?),
        "exthdr" => {
            let ok = a.get(NFTA_EXTHDR_TYPE)?.bytes().first() == Some(&IPPROTO_FRAGMENT)
                && be32(NFTA_EXTHDR_FLAGS)? & NFT_EXTHDR_F_PRESENT != 0
                && be32(NFTA_EXTHDR_OP).unwrap_or(NFT_EXTHDR_OP_IPV6) == NFT_EXTHDR_OP_IPV6;
            ok.then_some(Expr::Exthdr6Frag)?
        }
        "bitwise" => {
            let xor = value(NFTA_BITWISE_XOR)?;
            // A plain mask: xor zero (other bitwise operations are not ours).
            (xor.iter().all(|&b| b == 0) && be32(NFTA_BITWISE_OP).unwrap_or(0) == 0)
                .then_some(Expr::Bitwise(value(NFTA_BITWISE_MASK)?))?
        }
        "cmp" => match be32(NFTA_CMP_OP)? {
            NFT_CMP_EQ => Expr::Cmp(CmpOp::Eq, value(NFTA_CMP_DATA)?),
            NFT_CMP_NEQ => Expr::Cmp(CmpOp::Neq, value(NFTA_CMP_DATA)?),
            NFT_CMP_LTE => Expr::Cmp(CmpOp::Lte, value(NFTA_CMP_DATA)?),
            _ => return None,
        },
        "lookup" => {
            if a.get(NFTA_LOOKUP_DREG).is_some() {
                return None; // a map lookup into a register: not ours
            }
            let invert = be32(NFTA_LOOKUP_FLAGS).unwrap_or(0) & NFT_LOOKUP_F_INV != 0;
            Expr::Lookup {
                set: a.get(NFTA_LOOKUP_SET)?.str()?.to_string(),
                invert,
            }
        }
        "objref" => match (a.get(NFTA_OBJREF_SET_NAME), a.get(NFTA_OBJREF_IMM_NAME)) {
            (Some(map), _) => Expr::CounterMap(map.str()?.to_string()),
            (None, Some(obj)) if be32(NFTA_OBJREF_IMM_TYPE)? == NFT_OBJECT_COUNTER => {
                Expr::NamedCounter(obj.str()?.to_string())
            }
            _ => return None,
        },
        "counter" => Expr::Counter {
            packets: be64(NFTA_COUNTER_PACKETS).unwrap_or(0),
            bytes: be64(NFTA_COUNTER_BYTES).unwrap_or(0),
        },
        "limit" => {
            let per_second = be64(NFTA_LIMIT_UNIT)? == LIMIT_PER_SECOND
                && be32(NFTA_LIMIT_TYPE).unwrap_or(NFT_LIMIT_PKTS) == NFT_LIMIT_PKTS;
            let flags = be32(NFTA_LIMIT_FLAGS).unwrap_or(0);
            (per_second && flags & !NFT_LIMIT_F_INV == 0).then_some(Expr::Limit {
                rate: be64(NFTA_LIMIT_RATE)?,
                burst: be32(NFTA_LIMIT_BURST)?,
                over: flags & NFT_LIMIT_F_INV != 0,
            })?
        }
        "dynset" => {
            if be32(NFTA_DYNSET_OP).unwrap_or(NFT_DYNSET_OP_ADD) != NFT_DYNSET_OP_ADD
                || a.get(NFTA_DYNSET_SREG_DATA).is_some()
            {
                return None; // an update, or a map with data: not ours
            }
            let set = a.get(NFTA_DYNSET_SET_NAME)?.str()?.to_string();
            let Some(inner) = a.get(NFTA_DYNSET_EXPR) else {
                return Some(Expr::SetAdd(set));
            };
            let inner = inner.nested();
            let name = inner.get(NFTA_EXPR_NAME)?.str()?;
            let d = inner
                .get(NFTA_EXPR_DATA)
                .map(|x| x.nested())
                .unwrap_or(Attrs::new(&[]));
            let d32 = |k| d.get(k).and_then(|x| x.be32());
            let stateful = match name {
                "limit" => Stateful::Limit {
                    rate: d.get(NFTA_LIMIT_RATE)?.be64()?,
                    burst: d32(NFTA_LIMIT_BURST)?,
                    over: d32(NFTA_LIMIT_FLAGS).unwrap_or(0) & NFT_LIMIT_F_INV != 0,
                },
                "connlimit" => Stateful::ConnLimit {
                    count: d32(NFTA_CONNLIMIT_COUNT)?,
                    over: d32(NFTA_CONNLIMIT_FLAGS).unwrap_or(0) & NFT_CONNLIMIT_F_INV != 0,
                },
                _ => return None,
            };
            Expr::Dynset { set, stateful }
        }
        "log" => {
            let group =
                u16::from_be_bytes(a.get(NFTA_LOG_GROUP)?.bytes().get(..2)?.try_into().ok()?);
            let qthreshold = match a.get(NFTA_LOG_QTHRESHOLD) {
                Some(q) => u16::from_be_bytes(q.bytes().get(..2)?.try_into().ok()?),
                None => 0,
            };
            Expr::Log {
                group,
                snaplen: be32(NFTA_LOG_SNAPLEN).unwrap_or(0),
                qthreshold,
            }
        }
        "notrack" => Expr::Notrack,
        "synproxy" => {
            let flags = be32(NFTA_SYNPROXY_FLAGS)?;
            let ours = SYNPROXY_MSS | SYNPROXY_WSCALE;
            // MSS and window scale always, nothing past timestamps and SACK (no ECN): ours.
            if flags & ours != ours
                || flags & !(ours | SYNPROXY_SACK_PERM | SYNPROXY_TIMESTAMP) != 0
            {
                return None;
            }
            Expr::Synproxy(Synproxy {
                mss: u16::from_be_bytes(
                    a.get(NFTA_SYNPROXY_MSS)?
                        .bytes()
                        .get(..2)?
                        .try_into()
                        .ok()?,
                ),
                wscale: *a.get(NFTA_SYNPROXY_WSCALE)?.bytes().first()?,
                timestamp: flags & SYNPROXY_TIMESTAMP != 0,
                sack_perm: flags & SYNPROXY_SACK_PERM != 0,
            })
        }
        "immediate" => {
            let code = a
                .get(NFTA_IMMEDIATE_DATA)?
                .nested()
                .get(NFTA_DATA_VERDICT)?
                .nested()
                .get(NFTA_VERDICT_CODE)?
                .be32()? as i32;
            match code {
                NF_DROP => Expr::Verdict(Verdict::Drop),
                NFT_RETURN => Expr::Verdict(Verdict::Return),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::netlink::nft::abi::NFTA_RULE_EXPRESSIONS;
    use crate::ruleset::desired;

    #[test]
    fn every_rule_of_the_spec_decodes_to_itself() {
        for chain in desired(&Config::default()).chains {
            for rule in chain.rules {
                let mut w = Writer::new();
                w.begin(0, 0, 0, 0, 0);
                let list = w.nest_start(NFTA_RULE_EXPRESSIONS);
                encode_all(&mut w, &rule);
                w.nest_end(list).unwrap();
                w.end();
                let msg = super::super::wire::Msgs::new(w.bytes())
                    .next()
                    .unwrap()
                    .unwrap();
                let attrs = msg.nf_attrs().get(NFTA_RULE_EXPRESSIONS).unwrap().nested();
                assert_eq!(decode_all(attrs), Ok(rule));
            }
        }
    }

    #[test]
    fn foreign_expressions_are_named_not_guessed() {
        let mut w = Writer::new();
        w.begin(0, 0, 0, 0, 0);
        let list = w.nest_start(NFTA_RULE_EXPRESSIONS);
        let elem = w.nest_start(NFTA_LIST_ELEM);
        w.attr_str(NFTA_EXPR_NAME, "masq");
        w.nest_end(elem).unwrap();
        encode_all(&mut w, &[Expr::Verdict(Verdict::Drop)]);
        w.nest_end(list).unwrap();
        w.end();
        let msg = super::super::wire::Msgs::new(w.bytes())
            .next()
            .unwrap()
            .unwrap();
        let attrs = msg.nf_attrs().get(NFTA_RULE_EXPRESSIONS).unwrap().nested();
        assert_eq!(
            decode_all(attrs),
            Err("expressions [masq, immediate]".to_string())
        );
    }
}
