//! nf_tables messages: an atomic batch holding our table, chain and rules (encoded by rustables
//! and spliced in) and our sets and elements (encoded here: rustables has no per-element timeout,
//! interval elements or set size); and the decoding of the kernel's listings into `TableState`.

use std::net::IpAddr;
use std::time::Duration;

use rustables::expr::{
    Cmp, CmpOp, Counter, HighLevelPayload, IPv4HeaderField, IPv6HeaderField, Immediate, Lookup,
    Meta, MetaType, NetworkHeaderField, Register, VerdictKind,
};
use rustables::{
    Chain, ChainPolicy, ChainType, Hook, HookClass, MsgType, ProtocolFamily, Rule, Table,
};

use super::wire::{Attrs, Msg, Msgs, WireError, Writer, NLM_F_ACK, NLM_F_CREATE};
use crate::addr::Cidr;
use crate::ruleset::{
    ChainState, ElementKey, ElementState, Family, HookState, RuleSpec, RuleState, SetRole, SetSpec,
    SetState, TableSpec, Verdict, CHAIN, PRIORITY, TABLE,
};

/// Numbers from the kernel's `linux/netfilter/nf_tables.h` and `nfnetlink.h` (stable ABI).
pub mod abi {
    pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
    pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    pub const NFNL_MSG_BATCH_END: u16 = 0x11;
    pub const NFPROTO_UNSPEC: u8 = 0;
    pub const NFPROTO_INET: u8 = 1;

    pub const NFT_MSG_NEWTABLE: u16 = 0;
    pub const NFT_MSG_GETTABLE: u16 = 1;
    pub const NFT_MSG_DELTABLE: u16 = 2;
    pub const NFT_MSG_GETCHAIN: u16 = 4;
    pub const NFT_MSG_GETRULE: u16 = 7;
    pub const NFT_MSG_NEWSET: u16 = 9;
    pub const NFT_MSG_GETSET: u16 = 10;
    pub const NFT_MSG_NEWSETELEM: u16 = 12;
    pub const NFT_MSG_GETSETELEM: u16 = 13;
    pub const NFT_MSG_DELSETELEM: u16 = 14;

    pub const NFTA_TABLE_NAME: u16 = 1;
    pub const NFTA_TABLE_FLAGS: u16 = 2;
    pub const NFT_TABLE_F_OWNER: u32 = 0x2;
    pub const NFT_TABLE_F_PERSIST: u32 = 0x4;

    pub const NFTA_CHAIN_TABLE: u16 = 1;
    pub const NFTA_CHAIN_NAME: u16 = 3;
    pub const NFTA_CHAIN_HOOK: u16 = 4;
    pub const NFTA_CHAIN_POLICY: u16 = 5;
    pub const NFTA_CHAIN_TYPE: u16 = 7;
    pub const NFTA_HOOK_HOOKNUM: u16 = 1;
    pub const NFTA_HOOK_PRIORITY: u16 = 2;

    pub const NFTA_RULE_TABLE: u16 = 1;
    pub const NFTA_RULE_CHAIN: u16 = 2;
    pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
    pub const NFTA_LIST_ELEM: u16 = 1;
    pub const NFTA_EXPR_NAME: u16 = 1;
    pub const NFTA_EXPR_DATA: u16 = 2;

    pub const NFTA_SET_TABLE: u16 = 1;
    pub const NFTA_SET_NAME: u16 = 2;
    pub const NFTA_SET_FLAGS: u16 = 3;
    pub const NFTA_SET_KEY_TYPE: u16 = 4;
    pub const NFTA_SET_KEY_LEN: u16 = 5;
    pub const NFTA_SET_DESC: u16 = 9;
    pub const NFTA_SET_ID: u16 = 10;
    pub const NFTA_SET_DESC_SIZE: u16 = 1;
    pub const NFT_SET_INTERVAL: u32 = 0x4;
    pub const NFT_SET_TIMEOUT: u32 = 0x10;
    /// nft's datatype numbers for the set key.
    pub const TYPE_IPADDR: u32 = 7;
    pub const TYPE_IP6ADDR: u32 = 8;

    pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
    pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
    pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const NFTA_SET_ELEM_KEY: u16 = 1;
    pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
    pub const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
    pub const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
    pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
    pub const NFTA_DATA_VALUE: u16 = 1;
    pub const NFTA_DATA_VERDICT: u16 = 2;
    pub const NFTA_VERDICT_CODE: u16 = 1;

    pub const NFTA_META_KEY: u16 = 2;
    pub const NFT_META_NFPROTO: u32 = 15;
    pub const NFTA_CMP_OP: u16 = 2;
    pub const NFTA_CMP_DATA: u16 = 3;
    pub const NFT_CMP_EQ: u32 = 0;
    pub const NFTA_PAYLOAD_BASE: u16 = 2;
    pub const NFTA_PAYLOAD_OFFSET: u16 = 3;
    pub const NFTA_PAYLOAD_LEN: u16 = 4;
    pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
    pub const NFTA_LOOKUP_SET: u16 = 1;
    pub const NFTA_LOOKUP_FLAGS: u16 = 5;
    pub const NFTA_COUNTER_BYTES: u16 = 1;
    pub const NFTA_COUNTER_PACKETS: u16 = 2;
    pub const NFTA_IMMEDIATE_DREG: u16 = 1;
    pub const NFTA_IMMEDIATE_DATA: u16 = 2;
    pub const NF_DROP: i32 = 0;
    pub const NFT_RETURN: i32 = -5;
}
use abi::*;

/// Largest nested element list we put in one message: the attribute length is 16 bits.
const MAX_ELEMENTS_NEST: usize = 60_000;

/// A change to a set element: the key (a host or a prefix) and, for sets with timeouts, the
/// timeout and optionally the time left (when restoring an element listed earlier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementOp {
    pub key: ElementKey,
    pub timeout: Option<Duration>,
    pub expires: Option<Duration>,
}

/// One atomic nf_tables transaction under construction. Each message asks for an ACK and is
/// labelled, so an error from the kernel names the message it refused.
#[derive(Debug)]
pub struct Batch {
    w: Writer,
    first_seq: u32,
    next_seq: u32,
    labels: Vec<(u32, String)>,
    finished: bool,
}

impl Batch {
    pub fn new(first_seq: u32) -> Batch {
        let mut w = Writer::new();
        w.begin(
            NFNL_MSG_BATCH_BEGIN,
            0,
            first_seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        Batch {
            w,
            first_seq,
            next_seq: first_seq.wrapping_add(1),
            labels: Vec::new(),
            finished: false,
        }
    }

    /// Sequence numbers used, including the batch's begin and end markers.
    pub fn seq_range(&self) -> (u32, u32) {
        (self.first_seq, self.next_seq)
    }

    /// The sequence numbers of the messages that expect an ACK.
    pub fn acked_seqs(&self) -> impl Iterator<Item = u32> + '_ {
        self.labels.iter().map(|(seq, _)| *seq)
    }

    /// What the message with this sequence number did, for error messages.
    pub fn label(&self, seq: u32) -> Option<&str> {
        self.labels
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, l)| l.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Closes the batch and returns its bytes.
    pub fn finish(&mut self) -> &[u8] {
        if !self.finished {
            self.w.begin(
                NFNL_MSG_BATCH_END,
                0,
                self.next_seq,
                NFPROTO_UNSPEC,
                NFNL_SUBSYS_NFTABLES,
            );
            self.w.end();
            self.next_seq = self.next_seq.wrapping_add(1);
            self.finished = true;
        }
        self.w.bytes()
    }

    fn begin(&mut self, msg: u16, flags: u16, label: String) {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.labels.push((seq, label));
        self.w.begin(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            flags | NLM_F_ACK,
            seq,
            NFPROTO_INET,
            0,
        );
    }

    /// Appends the messages of a rustables batch (without its begin/end markers), renumbered
    /// into this batch's sequence.
    fn splice(&mut self, theirs: rustables::Batch, label: &str) -> Result<(), WireError> {
        let bytes = theirs.finalize();
        for msg in Msgs::new(&bytes) {
            let msg = msg?;
            if msg.kind() == NFNL_MSG_BATCH_BEGIN || msg.kind() == NFNL_MSG_BATCH_END {
                continue;
            }
            let seq = self.next_seq;
            self.next_seq = seq.wrapping_add(1);
            self.labels.push((seq, label.to_string()));
            let mut raw = msg.as_bytes().to_vec();
            raw[8..12].copy_from_slice(&seq.to_ne_bytes());
            self.w.extend_raw(&raw);
        }
        Ok(())
    }

    /// `add table inet ftagent` with the given flags.
    pub fn add_table(&mut self, flags: u32) -> Result<(), WireError> {
        let mut theirs = rustables::Batch::new();
        theirs.add(&inet_table().with_flags(flags), MsgType::Add);
        self.splice(theirs, &format!("add table inet {TABLE}"))
    }

    /// `delete table inet ftagent` (with everything in it).
    pub fn delete_table(&mut self) {
        self.begin(NFT_MSG_DELTABLE, 0, format!("delete table inet {TABLE}"));
        self.w.attr_str(NFTA_TABLE_NAME, TABLE);
        self.w.end();
    }

    /// A throwaway table of another name: used only by the feature probe.
    pub fn add_named_table(&mut self, name: &str, flags: u32) {
        self.begin(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            format!("add table inet {name}"),
        );
        self.w.attr_str(NFTA_TABLE_NAME, name);
        self.w.attr_be32(NFTA_TABLE_FLAGS, flags);
        self.w.end();
    }

    pub fn delete_named_table(&mut self, name: &str) {
        self.begin(NFT_MSG_DELTABLE, 0, format!("delete table inet {name}"));
        self.w.attr_str(NFTA_TABLE_NAME, name);
        self.w.end();
    }

    /// `add set inet <table> <name> { type …; flags …; size …; }`.
    pub fn add_set(&mut self, table: &str, spec: &SetSpec, id: u32) {
        let role = spec.role;
        self.begin(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            format!("add set {}", role.name()),
        );
        self.w.attr_str(NFTA_SET_TABLE, table);
        self.w.attr_str(NFTA_SET_NAME, role.name());
        let mut flags = 0;
        if role.interval() {
            flags |= NFT_SET_INTERVAL;
        }
        if role.timeout() {
            flags |= NFT_SET_TIMEOUT;
        }
        self.w.attr_be32(NFTA_SET_FLAGS, flags);
        let (key_type, key_len) = match role.family() {
            Family::V4 => (TYPE_IPADDR, 4),
            Family::V6 => (TYPE_IP6ADDR, 16),
        };
        self.w.attr_be32(NFTA_SET_KEY_TYPE, key_type);
        self.w.attr_be32(NFTA_SET_KEY_LEN, key_len);
        self.w.attr_be32(NFTA_SET_ID, id);
        if let Some(size) = spec.size {
            let desc = self.w.nest_start(NFTA_SET_DESC);
            self.w.attr_be32(NFTA_SET_DESC_SIZE, size);
            // A two-attribute nest cannot overflow.
            let _ = self.w.nest_end(desc);
        }
        self.w.end();
    }

    /// `add chain inet ftagent prerouting { type filter hook prerouting priority -310; }` and
    /// its rules, in order.
    pub fn add_chain_and_rules(&mut self, spec: &TableSpec) -> Result<(), WireError> {
        let table = inet_table();
        let chain = Chain::new(&table)
            .with_name(CHAIN)
            .with_hook(Hook::new(HookClass::PreRouting, PRIORITY))
            .with_type(ChainType::Filter)
            .with_policy(ChainPolicy::Accept);
        let mut theirs = rustables::Batch::new();
        theirs.add(&chain, MsgType::Add);
        self.splice(theirs, &format!("add chain inet {TABLE} {CHAIN}"))?;
        for rule in &spec.rules {
            let mut theirs = rustables::Batch::new();
            let built = build_rule(&chain, rule).map_err(|_| WireError::Truncated("rule"))?;
            theirs.add(&built, MsgType::Add);
            self.splice(theirs, &format!("add rule {}", describe_rule(rule)))?;
        }
        Ok(())
    }

    /// `add element` for each op, split over as many messages as the 16-bit attribute length
    /// needs. Without NLM_F_EXCL an existing element is not an error (and, on kernels that
    /// support it, gets the new timeout).
    pub fn add_elements(
        &mut self,
        table: &str,
        role: SetRole,
        ops: &[ElementOp],
    ) -> Result<(), WireError> {
        self.element_messages(NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add", table, role, ops)
    }

    pub fn delete_elements(
        &mut self,
        table: &str,
        role: SetRole,
        ops: &[ElementOp],
    ) -> Result<(), WireError> {
        self.element_messages(NFT_MSG_DELSETELEM, 0, "delete", table, role, ops)
    }

    fn element_messages(
        &mut self,
        msg: u16,
        flags: u16,
        verb: &str,
        table: &str,
        role: SetRole,
        ops: &[ElementOp],
    ) -> Result<(), WireError> {
        let mut rest = ops;
        while !rest.is_empty() {
            let label = match rest {
                [one] => format!("{verb} element {} to set {}", one.key, role.name()),
                _ => format!("{verb} elements {}… to set {}", rest[0].key, role.name()),
            };
            self.begin(msg, flags, label);
            self.w.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            self.w.attr_str(NFTA_SET_ELEM_LIST_SET, role.name());
            let list = self.w.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
            let mut written = 0;
            for op in rest {
                let mark = self.w.bytes().len();
                write_element(&mut self.w, role, op);
                if self.w.bytes().len() - list > MAX_ELEMENTS_NEST && written > 0 {
                    self.w.truncate(mark);
                    break;
                }
                written += 1;
            }
            self.w.nest_end(list)?;
            self.w.end();
            rest = &rest[written..];
        }
        Ok(())
    }
}

fn inet_table() -> Table {
    Table::new(ProtocolFamily::Inet).with_name(TABLE)
}

fn build_rule(chain: &Chain, spec: &RuleSpec) -> Result<Rule, rustables::error::BuilderError> {
    let (nfproto, field) = match spec.set.family() {
        Family::V4 => (
            libc::NFPROTO_IPV4 as u8,
            NetworkHeaderField::IPv4(IPv4HeaderField::Saddr),
        ),
        Family::V6 => (
            libc::NFPROTO_IPV6 as u8,
            NetworkHeaderField::IPv6(IPv6HeaderField::Saddr),
        ),
    };
    let mut rule = Rule::new(chain)?
        .with_expr(Meta::new(MetaType::NfProto))
        .with_expr(Cmp::new(CmpOp::Eq, [nfproto]))
        .with_expr(HighLevelPayload::Network(field).build())
        .with_expr(
            Lookup::default()
                .with_set(spec.set.name())
                .with_sreg(Register::Reg1),
        );
    if spec.counter {
        rule = rule.with_expr(Counter::default());
    }
    let verdict = match spec.verdict {
        Verdict::Return => VerdictKind::Return,
        Verdict::Drop => VerdictKind::Drop,
    };
    Ok(rule.with_expr(Immediate::new_verdict(verdict)))
}

fn describe_rule(spec: &RuleSpec) -> String {
    format!(
        "{} saddr @{} {:?}",
        spec.set.family().header_name(),
        spec.set.name(),
        spec.verdict
    )
}

/// One element (two for an interval: its start, then its end marked INTERVAL_END).
fn write_element(w: &mut Writer, role: SetRole, op: &ElementOp) {
    let (start, end) = match op.key {
        ElementKey::Cidr(c) if role.interval() => c.interval(),
        ElementKey::Cidr(c) => (c.addr(), None),
        ElementKey::Range(a, b) => (a, next_addr(b)),
    };
    let elem = w.nest_start(NFTA_LIST_ELEM);
    write_key(w, start);
    if let Some(t) = op.timeout {
        w.attr_be64(NFTA_SET_ELEM_TIMEOUT, t.as_millis() as u64);
    }
    if let Some(x) = op.expires {
        w.attr_be64(NFTA_SET_ELEM_EXPIRATION, x.as_millis() as u64);
    }
    let _ = w.nest_end(elem);
    if let (true, Some(end)) = (role.interval(), end) {
        let elem = w.nest_start(NFTA_LIST_ELEM);
        write_key(w, end);
        w.attr_be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        let _ = w.nest_end(elem);
    }
}

fn write_key(w: &mut Writer, addr: IpAddr) {
    let key = w.nest_start(NFTA_SET_ELEM_KEY);
    match addr {
        IpAddr::V4(a) => w.attr(NFTA_DATA_VALUE, &a.octets()),
        IpAddr::V6(a) => w.attr(NFTA_DATA_VALUE, &a.octets()),
    }
    let _ = w.nest_end(key);
}

fn next_addr(addr: IpAddr) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// Requests for the kernel's view of our table.
pub mod request {
    use super::*;

    pub fn get_table(w: &mut Writer, seq: u32, name: &str) {
        w.begin(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            NLM_F_ACK,
            seq,
            NFPROTO_INET,
            0,
        );
        w.attr_str(NFTA_TABLE_NAME, name);
        w.end();
    }

    /// Dumps of the sets, chains and rules of our table, and of one set's elements.
    pub fn dump(w: &mut Writer, seq: u32, msg: u16, set: Option<&str>) {
        w.begin(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            super::super::wire::NLM_F_DUMP,
            seq,
            NFPROTO_INET,
            0,
        );
        // NFTA_{SET,CHAIN,RULE}_TABLE and NFTA_SET_ELEM_LIST_TABLE are all attribute 1.
        w.attr_str(1, TABLE);
        if let Some(set) = set {
            w.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        }
        w.end();
    }
}

/// Whether a listed set, chain or rule belongs to our table (attribute 1 names the table in
/// each of them).
pub fn in_our_table(msg: &Msg) -> bool {
    msg.nfgen_family() == Some(NFPROTO_INET)
        && msg.nf_attrs().get(1).and_then(|a| a.str()) == Some(TABLE)
}

/// The flags of a listed table.
pub fn decode_table_flags(msg: &Msg) -> u32 {
    msg.nf_attrs()
        .get(NFTA_TABLE_FLAGS)
        .and_then(|a| a.be32())
        .unwrap_or(0)
}

/// A listed set, without its elements.
pub fn decode_set(msg: &Msg) -> Option<SetState> {
    let attrs = msg.nf_attrs();
    let name = attrs.get(NFTA_SET_NAME)?.str()?.to_string();
    let flags = attrs
        .get(NFTA_SET_FLAGS)
        .and_then(|a| a.be32())
        .unwrap_or(0);
    let family = match attrs.get(NFTA_SET_KEY_TYPE).and_then(|a| a.be32()) {
        Some(TYPE_IPADDR) => Some(Family::V4),
        Some(TYPE_IP6ADDR) => Some(Family::V6),
        _ => None,
    };
    let size = attrs
        .get(NFTA_SET_DESC)
        .and_then(|d| d.nested().get(NFTA_SET_DESC_SIZE))
        .and_then(|a| a.be32());
    Some(SetState {
        name,
        family,
        interval: flags & NFT_SET_INTERVAL != 0,
        timeout: flags & NFT_SET_TIMEOUT != 0,
        size,
        elements: Vec::new(),
    })
}

/// One element as listed: its key, whether it ends an interval, its timeout and time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawElement {
    pub key: IpAddr,
    pub interval_end: bool,
    pub timeout: Option<Duration>,
    pub expires: Option<Duration>,
}

/// The elements of one NEWSETELEM message of a set element dump.
pub fn decode_elements(msg: &Msg, out: &mut Vec<RawElement>) {
    let Some(list) = msg.nf_attrs().get(NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return;
    };
    for elem in list.nested().filter(|a| a.kind() == NFTA_LIST_ELEM) {
        let attrs = elem.nested();
        let key = attrs
            .get(NFTA_SET_ELEM_KEY)
            .and_then(|k| k.nested().get(NFTA_DATA_VALUE))
            .and_then(|v| addr_from_bytes(v.bytes()));
        let Some(key) = key else { continue };
        let flags = attrs
            .get(NFTA_SET_ELEM_FLAGS)
            .and_then(|a| a.be32())
            .unwrap_or(0);
        let ms = |kind| {
            attrs
                .get(kind)
                .and_then(|a| a.be64())
                .map(Duration::from_millis)
        };
        out.push(RawElement {
            key,
            interval_end: flags & NFT_SET_ELEM_INTERVAL_END != 0,
            timeout: ms(NFTA_SET_ELEM_TIMEOUT),
            expires: ms(NFTA_SET_ELEM_EXPIRATION),
        });
    }
}

fn addr_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Turns listed elements into keys: single addresses as hosts; for an interval set, each start
/// joined with the end that follows it (an open start runs to the top of the family).
pub fn assemble_elements(interval: bool, mut raw: Vec<RawElement>) -> Vec<ElementState> {
    if !interval {
        return raw
            .into_iter()
            .filter(|e| !e.interval_end)
            .map(|e| ElementState {
                key: ElementKey::Cidr(Cidr::host(e.key)),
                timeout: e.timeout,
                expires: e.expires,
            })
            .collect();
    }
    // Ascending by key; at equal keys an end sorts before the start of the next interval.
    raw.sort_by(|a, b| a.key.cmp(&b.key).then(b.interval_end.cmp(&a.interval_end)));
    let mut out = Vec::new();
    let mut open: Option<RawElement> = None;
    for e in raw {
        match (e.interval_end, open.take()) {
            (false, previous) => {
                if let Some(p) = previous {
                    out.push(interval_element(p, None));
                }
                open = Some(e);
            }
            (true, Some(start)) => out.push(interval_element(start, Some(e.key))),
            (true, None) => {} // an end without a start: nothing to show
        }
    }
    if let Some(p) = open {
        out.push(interval_element(p, None));
    }
    out
}

fn interval_element(start: RawElement, end: Option<IpAddr>) -> ElementState {
    ElementState {
        key: ElementKey::from_interval(start.key, end),
        timeout: start.timeout,
        expires: start.expires,
    }
}

/// A listed chain (its rules are listed separately).
pub fn decode_chain(msg: &Msg) -> Option<ChainState> {
    let attrs = msg.nf_attrs();
    let name = attrs.get(NFTA_CHAIN_NAME)?.str()?.to_string();
    let hook = attrs.get(NFTA_CHAIN_HOOK).map(|h| {
        let hooknum = h.nested().get(NFTA_HOOK_HOOKNUM).and_then(|a| a.be32());
        let priority = h.nested().get(NFTA_HOOK_PRIORITY).and_then(|a| a.be32());
        let hook = match hooknum {
            Some(0) => "prerouting",
            Some(1) => "input",
            Some(2) => "forward",
            Some(3) => "output",
            Some(4) => "postrouting",
            Some(5) => "ingress",
            _ => "unknown",
        };
        let policy = attrs
            .get(NFTA_CHAIN_POLICY)
            .and_then(|a| a.be32())
            .unwrap_or(1);
        let kind = attrs
            .get(NFTA_CHAIN_TYPE)
            .and_then(|a| a.str())
            .unwrap_or("filter");
        HookState {
            hook: hook.to_string(),
            priority: priority.unwrap_or(0) as i32,
            kind: kind.to_string(),
            policy_accept: policy as i32 != NF_DROP,
        }
    });
    Some(ChainState {
        name,
        hook,
        rules: Vec::new(),
    })
}

/// The chain a listed rule belongs to, and the rule: one of our shapes, or a description.
pub fn decode_rule(msg: &Msg) -> Option<(String, RuleState)> {
    let attrs = msg.nf_attrs();
    let chain = attrs.get(NFTA_RULE_CHAIN)?.str()?.to_string();
    let exprs = attrs
        .get(NFTA_RULE_EXPRESSIONS)
        .map(|a| a.nested())
        .unwrap_or(Attrs::new(&[]));
    let exprs: Vec<(&str, Attrs)> = exprs
        .filter(|e| e.kind() == NFTA_LIST_ELEM)
        .map(|e| {
            let name = e
                .nested()
                .get(NFTA_EXPR_NAME)
                .and_then(|n| n.str())
                .unwrap_or("?");
            let data = e
                .nested()
                .get(NFTA_EXPR_DATA)
                .map(|d| d.nested())
                .unwrap_or(Attrs::new(&[]));
            (name, data)
        })
        .collect();
    let state = match_our_rule(&exprs).unwrap_or_else(|| {
        let names: Vec<&str> = exprs.iter().map(|(n, _)| *n).collect();
        RuleState::Unknown(format!("expressions [{}]", names.join(", ")))
    });
    Some((chain, state))
}

/// `meta nfproto X; payload network saddr; lookup @set; [counter]; immediate verdict`.
fn match_our_rule(exprs: &[(&str, Attrs)]) -> Option<RuleState> {
    let be32 = |a: &Attrs, k| a.get(k).and_then(|x| x.be32());
    let (counter, verdict_expr) = match exprs {
        [_, _, _, _, ("counter", c), ("immediate", v)] => (Some(c), v),
        [_, _, _, _, ("immediate", v)] => (None, v),
        _ => return None,
    };
    let [("meta", meta), ("cmp", cmp), ("payload", payload), ("lookup", lookup), ..] = exprs else {
        return None;
    };
    if be32(meta, NFTA_META_KEY)? != NFT_META_NFPROTO || be32(cmp, NFTA_CMP_OP)? != NFT_CMP_EQ {
        return None;
    }
    let nfproto = *cmp
        .get(NFTA_CMP_DATA)?
        .nested()
        .get(NFTA_DATA_VALUE)?
        .bytes()
        .first()?;
    let (family, offset, len) = match nfproto as i32 {
        libc::NFPROTO_IPV4 => (Family::V4, 12, 4),
        libc::NFPROTO_IPV6 => (Family::V6, 8, 16),
        _ => return None,
    };
    let payload_ok = be32(payload, NFTA_PAYLOAD_BASE)? == NFT_PAYLOAD_NETWORK_HEADER
        && be32(payload, NFTA_PAYLOAD_OFFSET)? == offset
        && be32(payload, NFTA_PAYLOAD_LEN)? == len;
    let inverted = be32(lookup, NFTA_LOOKUP_FLAGS).unwrap_or(0) != 0;
    let set = SetRole::from_name(lookup.get(NFTA_LOOKUP_SET)?.str()?)?;
    if !payload_ok || inverted || set.family() != family {
        return None;
    }
    let code = verdict_expr
        .get(NFTA_IMMEDIATE_DATA)?
        .nested()
        .get(NFTA_DATA_VERDICT)?
        .nested()
        .get(NFTA_VERDICT_CODE)?
        .be32()? as i32;
    let verdict = match code {
        NF_DROP => Verdict::Drop,
        NFT_RETURN => Verdict::Return,
        _ => return None,
    };
    let (packets, bytes) = match counter {
        Some(c) => (
            c.get(NFTA_COUNTER_PACKETS)
                .and_then(|a| a.be64())
                .unwrap_or(0),
            c.get(NFTA_COUNTER_BYTES)
                .and_then(|a| a.be64())
                .unwrap_or(0),
        ),
        None => (0, 0),
    };
    let spec = RuleSpec {
        set,
        counter: counter.is_some(),
        verdict,
    };
    Some(RuleState::Known {
        spec,
        packets,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(key: &str, end: bool, expires_s: Option<u64>) -> RawElement {
        RawElement {
            key: key.parse().unwrap(),
            interval_end: end,
            timeout: expires_s.map(|_| Duration::from_secs(60)),
            expires: expires_s.map(Duration::from_secs),
        }
    }

    #[test]
    fn intervals_are_reassembled_whatever_the_listing_order() {
        // The kernel lists interval sets from the highest key down.
        let listed = vec![
            raw("10.0.3.0", true, None),
            raw("10.0.1.0", false, None),
            raw("10.0.1.0", true, None),
            raw("10.0.0.0", false, None),
            raw("192.168.0.0", false, Some(5)),
        ];
        let keys: Vec<String> = assemble_elements(true, listed)
            .iter()
            .map(|e| e.key.to_string())
            .collect();
        assert_eq!(
            keys,
            vec![
                "10.0.0.0/24",
                "10.0.1.0-10.0.2.255",
                "192.168.0.0-255.255.255.255"
            ]
        );
    }

    #[test]
    fn elements_are_split_before_the_attribute_length_overflows() {
        let ops: Vec<ElementOp> = (0..10_000u32)
            .map(|i| ElementOp {
                key: ElementKey::Cidr(Cidr::host(IpAddr::V4((0x0a00_0000 + i).into()))),
                timeout: Some(Duration::from_secs(60)),
                expires: None,
            })
            .collect();
        let mut batch = Batch::new(1);
        batch
            .add_elements(TABLE, SetRole::Ban(Family::V4), &ops)
            .unwrap();
        let bytes = batch.finish().to_vec();
        let mut total = 0;
        let mut messages = 0;
        for msg in Msgs::new(&bytes) {
            let msg = msg.unwrap();
            if msg.kind() == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
                let mut out = Vec::new();
                decode_elements(&msg, &mut out);
                total += out.len();
                messages += 1;
            }
        }
        assert_eq!(total, 10_000);
        assert!(messages >= 5, "{messages} messages");
    }

    #[test]
    fn rustables_rules_decode_as_ours() {
        let spec = crate::ruleset::desired(&crate::config::Config::default());
        let mut batch = Batch::new(1);
        batch.add_chain_and_rules(&spec).unwrap();
        let bytes = batch.finish().to_vec();
        let mut decoded = Vec::new();
        for msg in Msgs::new(&bytes) {
            let msg = msg.unwrap();
            if msg.kind() == (NFNL_SUBSYS_NFTABLES << 8) | 6 {
                let (chain, state) = decode_rule(&msg).unwrap();
                assert_eq!(chain, CHAIN);
                decoded.push(state);
            }
        }
        let want: Vec<RuleState> = spec
            .rules
            .iter()
            .map(|s| RuleState::Known {
                spec: s.clone(),
                packets: 0,
                bytes: 0,
            })
            .collect();
        assert_eq!(decoded, want);
    }
}
