//! nf_tables messages: an atomic batch holding our table and chains (encoded by rustables and
//! spliced in), our counters, sets, maps, rules and elements (encoded here: rustables has no
//! per-element timeout, interval elements, set size, counter objects or counter maps); and the
//! decoding of the kernel's listings into `TableState`.

use std::net::IpAddr;
use std::time::Duration;

use rustables::{Chain, ChainPolicy, ChainType, Hook, HookClass, MsgType, ProtocolFamily, Table};

use super::expr;
use super::wire::{Attrs, Msg, Msgs, WireError, Writer, NLM_F_ACK, NLM_F_CREATE};
use crate::ruleset::{
    ChainHook, ChainSpec, ChainState, CounterState, ElementKey, ElementState, HookState, Key,
    KeyType, RuleState, SetSpec, SetState, TABLE,
};

/// Numbers from the kernel's `linux/netfilter/nf_tables.h` and `nfnetlink.h` (stable ABI).
pub(crate) mod abi {
    pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
    pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;
    pub(crate) const NFPROTO_UNSPEC: u8 = 0;
    pub(crate) const NFPROTO_INET: u8 = 1;

    pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
    pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
    pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
    pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
    pub(crate) const NFT_MSG_GETCHAIN: u16 = 4;
    pub(crate) const NFT_MSG_DELCHAIN: u16 = 5;
    pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
    pub(crate) const NFT_MSG_GETRULE: u16 = 7;
    pub(crate) const NFT_MSG_DELRULE: u16 = 8;
    pub(crate) const NFT_MSG_NEWSET: u16 = 9;
    pub(crate) const NFT_MSG_GETSET: u16 = 10;
    pub(crate) const NFT_MSG_DELSET: u16 = 11;
    pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
    pub(crate) const NFT_MSG_GETSETELEM: u16 = 13;
    pub(crate) const NFT_MSG_DELSETELEM: u16 = 14;
    pub(crate) const NFT_MSG_NEWGEN: u16 = 15;
    pub(crate) const NFT_MSG_GETGEN: u16 = 16;
    pub(crate) const NFT_MSG_NEWOBJ: u16 = 18;
    pub(crate) const NFT_MSG_GETOBJ: u16 = 19;
    pub(crate) const NFT_MSG_DELOBJ: u16 = 20;

    pub(crate) const NFTA_GEN_ID: u16 = 1;
    pub(crate) const NFTA_GEN_PROC_PID: u16 = 2;
    pub(crate) const NFTA_GEN_PROC_NAME: u16 = 3;

    /// NFTA_SET_TABLE, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_OBJ_TABLE and
    /// NFTA_SET_ELEM_LIST_TABLE: the table is attribute 1 of each.
    pub(crate) const NFTA_ANY_TABLE: u16 = 1;
    pub(crate) const NFTA_TABLE_NAME: u16 = 1;
    pub(crate) const NFTA_TABLE_FLAGS: u16 = 2;
    pub(crate) const NFT_TABLE_F_OWNER: u32 = 0x2;
    pub(crate) const NFT_TABLE_F_PERSIST: u32 = 0x4;

    pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
    pub(crate) const NFTA_CHAIN_HOOK: u16 = 4;
    pub(crate) const NFTA_CHAIN_POLICY: u16 = 5;
    pub(crate) const NFTA_CHAIN_TYPE: u16 = 7;
    pub(crate) const NFTA_HOOK_HOOKNUM: u16 = 1;
    pub(crate) const NFTA_HOOK_PRIORITY: u16 = 2;

    pub(crate) const NFTA_RULE_TABLE: u16 = 1;
    pub(crate) const NFTA_RULE_CHAIN: u16 = 2;
    pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
    pub(crate) const NLM_F_APPEND: u16 = 0x800;

    pub(crate) const NFTA_OBJ_TABLE: u16 = 1;
    pub(crate) const NFTA_OBJ_NAME: u16 = 2;
    pub(crate) const NFTA_OBJ_TYPE: u16 = 3;
    pub(crate) const NFTA_OBJ_DATA: u16 = 4;
    pub(crate) const NFT_OBJECT_COUNTER: u32 = 1;
    pub(crate) const NFTA_LIST_ELEM: u16 = 1;

    pub(crate) const NFTA_SET_TABLE: u16 = 1;
    pub(crate) const NFTA_SET_NAME: u16 = 2;
    pub(crate) const NFTA_SET_FLAGS: u16 = 3;
    pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
    pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
    pub(crate) const NFTA_SET_DESC: u16 = 9;
    pub(crate) const NFTA_SET_ID: u16 = 10;
    pub(crate) const NFTA_SET_OBJ_TYPE: u16 = 15;
    pub(crate) const NFTA_SET_DESC_SIZE: u16 = 1;
    pub(crate) const NFT_SET_OBJECT: u32 = 0x40;
    pub(crate) const NFT_SET_EVAL: u32 = 0x20;
    pub(crate) const NFTA_SET_TIMEOUT: u16 = 11;
    pub(crate) const NFT_SET_INTERVAL: u32 = 0x4;
    pub(crate) const NFT_SET_TIMEOUT: u32 = 0x10;

    pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
    pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
    pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
    pub(crate) const NFTA_SET_ELEM_FLAGS: u16 = 3;
    pub(crate) const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
    pub(crate) const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
    pub(crate) const NFTA_SET_ELEM_OBJREF: u16 = 9;
    pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
    pub(crate) const NFTA_DATA_VALUE: u16 = 1;

    pub(crate) const NFTA_COUNTER_BYTES: u16 = 1;
    pub(crate) const NFTA_COUNTER_PACKETS: u16 = 2;
}
use abi::*;

/// Largest nested element list we put in one message: the attribute length is 16 bits.
const MAX_ELEMENTS_NEST: usize = 60_000;

/// A change to a set element: the key and, for sets with timeouts, the timeout and optionally
/// the time left (when restoring an element listed earlier); for a counter map, the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ElementOp<'a> {
    pub(crate) key: Key,
    pub(crate) timeout: Option<Duration>,
    pub(crate) expires: Option<Duration>,
    pub(crate) counter: Option<&'a str>,
}

impl ElementOp<'_> {
    pub(crate) fn key(key: Key) -> ElementOp<'static> {
        ElementOp {
            key,
            timeout: None,
            expires: None,
            counter: None,
        }
    }
}

/// The set an element message is for: its name and whether its keys are intervals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SetRef<'a> {
    pub(crate) table: &'a str,
    pub(crate) name: &'a str,
    pub(crate) interval: bool,
}

/// One atomic nf_tables transaction under construction. Each message asks for an ACK and is
/// labelled, so an error from the kernel names the message it refused.
#[derive(Debug)]
pub(crate) struct Batch {
    w: Writer,
    first_seq: u32,
    next_seq: u32,
    /// What each message does, in sequence order from `first_seq + 1`.
    labels: Vec<String>,
    finished: bool,
}

impl Batch {
    pub(crate) fn new(first_seq: u32) -> Batch {
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
    pub(crate) fn seq_range(&self) -> (u32, u32) {
        (self.first_seq, self.next_seq)
    }

    /// How many messages expect an ACK (every one between the begin and end markers).
    pub(crate) fn acked_count(&self) -> usize {
        self.labels.len()
    }

    /// The position of the message with this sequence number among those that expect an
    /// ACK, or None for any other number (the begin marker's among them).
    pub(crate) fn index_of(&self, seq: u32) -> Option<usize> {
        let index = seq.wrapping_sub(self.first_seq.wrapping_add(1)) as usize;
        (index < self.labels.len()).then_some(index)
    }

    /// What the message with this sequence number did, for error messages.
    pub(crate) fn label(&self, seq: u32) -> Option<&str> {
        self.index_of(seq).map(|i| self.labels[i].as_str())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Closes the batch and returns its bytes.
    pub(crate) fn finish(&mut self) -> &[u8] {
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
        self.labels.push(label);
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
            self.labels.push(label.to_string());
            let mut raw = msg.as_bytes().to_vec();
            raw[8..12].copy_from_slice(&seq.to_ne_bytes());
            self.w.extend_raw(&raw);
        }
        Ok(())
    }

    /// `add table inet ftagent` with the given flags.
    pub(crate) fn add_table(&mut self, flags: u32) -> Result<(), WireError> {
        let mut theirs = rustables::Batch::new();
        theirs.add(&inet_table().with_flags(flags), MsgType::Add);
        self.splice(theirs, &format!("add table inet {TABLE}"))
    }

    /// `delete table inet ftagent` (with everything in it).
    pub(crate) fn delete_table(&mut self) {
        self.delete_named_table(TABLE);
    }

    /// A throwaway table of another name: used only by the feature probe.
    pub(crate) fn add_named_table(&mut self, name: &str, flags: u32) {
        self.begin(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            format!("add table inet {name}"),
        );
        self.w.attr_str(NFTA_TABLE_NAME, name);
        self.w.attr_be32(NFTA_TABLE_FLAGS, flags);
        self.w.end();
    }

    pub(crate) fn delete_named_table(&mut self, name: &str) {
        self.begin(NFT_MSG_DELTABLE, 0, format!("delete table inet {name}"));
        self.w.attr_str(NFTA_TABLE_NAME, name);
        self.w.end();
    }

    /// `add counter inet ftagent NAME`.
    pub(crate) fn add_counter(&mut self, name: &str) {
        self.begin(NFT_MSG_NEWOBJ, NLM_F_CREATE, format!("add counter {name}"));
        self.w.attr_str(NFTA_OBJ_TABLE, TABLE);
        self.w.attr_str(NFTA_OBJ_NAME, name);
        self.w.attr_be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        let data = self.w.nest_start(NFTA_OBJ_DATA);
        self.w.attr_be64(NFTA_COUNTER_BYTES, 0);
        self.w.attr_be64(NFTA_COUNTER_PACKETS, 0);
        let _ = self.w.nest_end(data);
        self.w.end();
    }

    /// `delete counter inet ftagent NAME` (nothing may refer to it any more).
    pub(crate) fn delete_counter(&mut self, name: &str) {
        self.begin(NFT_MSG_DELOBJ, 0, format!("delete counter {name}"));
        self.w.attr_str(NFTA_OBJ_TABLE, TABLE);
        self.w.attr_str(NFTA_OBJ_NAME, name);
        self.w.attr_be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        self.w.end();
    }

    /// `add set` / `add map … : counter` with its type, flags and size (not its elements).
    pub(crate) fn add_set(&mut self, table: &str, spec: &SetSpec, id: u32) {
        let kind = if spec.counter_map { "map" } else { "set" };
        self.begin(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            format!("add {kind} {}", spec.name),
        );
        self.w.attr_str(NFTA_SET_TABLE, table);
        self.w.attr_str(NFTA_SET_NAME, &spec.name);
        let mut flags = 0;
        if spec.interval {
            flags |= NFT_SET_INTERVAL;
        }
        if spec.timeout {
            flags |= NFT_SET_TIMEOUT;
        }
        if spec.counter_map {
            flags |= NFT_SET_OBJECT;
        }
        if spec.dynamic {
            flags |= NFT_SET_EVAL;
        }
        self.w.attr_be32(NFTA_SET_FLAGS, flags);
        if let Some(t) = spec.default_timeout {
            self.w.attr_be64(NFTA_SET_TIMEOUT, t.as_millis() as u64);
        }
        self.w.attr_be32(NFTA_SET_KEY_TYPE, spec.key.type_id());
        self.w.attr_be32(NFTA_SET_KEY_LEN, spec.key.key_len());
        self.w.attr_be32(NFTA_SET_ID, id);
        if spec.counter_map {
            self.w.attr_be32(NFTA_SET_OBJ_TYPE, NFT_OBJECT_COUNTER);
        }
        if let Some(size) = spec.size {
            let desc = self.w.nest_start(NFTA_SET_DESC);
            self.w.attr_be32(NFTA_SET_DESC_SIZE, size);
            // A one-attribute nest cannot overflow.
            let _ = self.w.nest_end(desc);
        }
        self.w.end();
    }

    /// A base chain (filter, on its hook, policy accept) and its rules, in order.
    pub(crate) fn add_chain_and_rules(&mut self, spec: &ChainSpec) -> Result<(), WireError> {
        self.add_chain_and_rules_in(TABLE, spec)
    }

    /// The same in another table of family inet (the feature probe's).
    pub(crate) fn add_chain_and_rules_in(
        &mut self,
        table: &str,
        spec: &ChainSpec,
    ) -> Result<(), WireError> {
        let hook = match spec.hook {
            ChainHook::Prerouting => HookClass::PreRouting,
            ChainHook::Input => HookClass::In,
        };
        let chain = Chain::new(&Table::new(ProtocolFamily::Inet).with_name(table))
            .with_name(spec.name)
            .with_hook(Hook::new(hook, spec.priority))
            .with_type(ChainType::Filter)
            .with_policy(ChainPolicy::Accept);
        let mut theirs = rustables::Batch::new();
        theirs.add(&chain, MsgType::Add);
        self.splice(theirs, &format!("add chain inet {table} {}", spec.name))?;
        for (i, rule) in spec.rules.iter().enumerate() {
            self.begin(
                NFT_MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND,
                format!("add rule {} #{}", spec.name, i + 1),
            );
            self.w.attr_str(NFTA_RULE_TABLE, table);
            self.w.attr_str(NFTA_RULE_CHAIN, spec.name);
            let list = self.w.nest_start(NFTA_RULE_EXPRESSIONS);
            expr::encode_all(&mut self.w, rule);
            self.w.nest_end(list)?;
            self.w.end();
        }
        Ok(())
    }

    /// `add element` for each op, split over as many messages as the 16-bit attribute length
    /// needs. Without NLM_F_EXCL an existing element is not an error (and, on kernels that
    /// support it, gets the new timeout).
    pub(crate) fn add_elements(&mut self, set: SetRef, ops: &[ElementOp]) -> Result<(), WireError> {
        self.element_messages(NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add", set, ops)
    }

    pub(crate) fn delete_elements(
        &mut self,
        set: SetRef,
        ops: &[ElementOp],
    ) -> Result<(), WireError> {
        self.element_messages(NFT_MSG_DELSETELEM, 0, "delete", set, ops)
    }

    fn element_messages(
        &mut self,
        msg: u16,
        flags: u16,
        verb: &str,
        set: SetRef,
        ops: &[ElementOp],
    ) -> Result<(), WireError> {
        let mut rest = ops;
        while !rest.is_empty() {
            let first = describe_key(&rest[0].key);
            let label = match rest {
                [_] => format!("{verb} element {first} to set {}", set.name),
                _ => format!("{verb} elements {first}… to set {}", set.name),
            };
            self.begin(msg, flags, label);
            self.w.attr_str(NFTA_SET_ELEM_LIST_TABLE, set.table);
            self.w.attr_str(NFTA_SET_ELEM_LIST_SET, set.name);
            let list = self.w.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
            let mut written = 0;
            for op in rest {
                let mark = self.w.bytes().len();
                write_element(&mut self.w, set.interval, op);
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

fn describe_key(key: &Key) -> String {
    match key {
        Key::Addr(a) => a.to_string(),
        Key::Ports(a, b) if a == b => a.to_string(),
        Key::Ports(a, b) => format!("{a}-{b}"),
        Key::Byte(b) => b.to_string(),
    }
}

/// The bytes of a key's first value and of the value one past its last (None: runs to the top).
fn key_bounds(key: &Key) -> (KeyBytes, Option<KeyBytes>) {
    match *key {
        Key::Addr(ElementKey::Cidr(c)) => {
            let (start, end) = c.interval();
            (KeyBytes::addr(start), end.map(KeyBytes::addr))
        }
        Key::Addr(ElementKey::Range(a, b)) => (KeyBytes::addr(a), next_addr(b).map(KeyBytes::addr)),
        Key::Ports(a, b) => (KeyBytes::port(a), b.checked_add(1).map(KeyBytes::port)),
        Key::Byte(b) => (
            KeyBytes::new(&[b]),
            b.checked_add(1).map(|n| KeyBytes::new(&[n])),
        ),
    }
}

/// One element (two for an interval: its start, then its end marked INTERVAL_END).
fn write_element(w: &mut Writer, interval: bool, op: &ElementOp) {
    let (start, end) = key_bounds(&op.key);
    let elem = w.nest_start(NFTA_LIST_ELEM);
    write_key(w, &start);
    if let Some(t) = op.timeout {
        w.attr_be64(NFTA_SET_ELEM_TIMEOUT, t.as_millis() as u64);
    }
    if let Some(x) = op.expires {
        w.attr_be64(NFTA_SET_ELEM_EXPIRATION, x.as_millis() as u64);
    }
    if let Some(counter) = op.counter {
        w.attr_str(NFTA_SET_ELEM_OBJREF, counter);
    }
    let _ = w.nest_end(elem);
    if let (true, Some(end)) = (interval, end) {
        let elem = w.nest_start(NFTA_LIST_ELEM);
        write_key(w, &end);
        w.attr_be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        let _ = w.nest_end(elem);
    }
}

fn write_key(w: &mut Writer, key: &KeyBytes) {
    let nest = w.nest_start(NFTA_SET_ELEM_KEY);
    w.attr(NFTA_DATA_VALUE, key.bytes());
    let _ = w.nest_end(nest);
}

fn next_addr(addr: IpAddr) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// A key as the kernel holds it: up to 16 bytes, network order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KeyBytes {
    bytes: [u8; 16],
    len: u8,
}

impl KeyBytes {
    fn new(b: &[u8]) -> KeyBytes {
        let mut bytes = [0u8; 16];
        let len = b.len().min(16);
        bytes[..len].copy_from_slice(&b[..len]);
        KeyBytes {
            bytes,
            len: len as u8,
        }
    }

    fn addr(a: IpAddr) -> KeyBytes {
        match a {
            IpAddr::V4(a) => KeyBytes::new(&a.octets()),
            IpAddr::V6(a) => KeyBytes::new(&a.octets()),
        }
    }

    fn port(p: u16) -> KeyBytes {
        KeyBytes::new(&p.to_be_bytes())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The key read as the given type; None when the length does not fit it.
    fn value(&self, key_type: KeyType) -> Option<KeyValue> {
        let b = self.bytes();
        match (key_type, b.len()) {
            (KeyType::Ipv4Addr, 4) => <[u8; 4]>::try_from(b)
                .ok()
                .map(|a| KeyValue::Addr(IpAddr::from(a))),
            (KeyType::Ipv6Addr, 16) => <[u8; 16]>::try_from(b)
                .ok()
                .map(|a| KeyValue::Addr(IpAddr::from(a))),
            (KeyType::InetService, 2) => Some(KeyValue::Port(u16::from_be_bytes([b[0], b[1]]))),
            (KeyType::InetProto | KeyType::NfProto, 1) => Some(KeyValue::Byte(b[0])),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyValue {
    Addr(IpAddr),
    Port(u16),
    Byte(u8),
}

/// Requests for the kernel's view of our table.
pub(crate) mod request {
    use super::*;

    pub(crate) fn get_table(w: &mut Writer, seq: u32, name: &str) {
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

    pub(crate) fn get_generation(w: &mut Writer, seq: u32) {
        w.begin(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
            NLM_F_ACK,
            seq,
            NFPROTO_UNSPEC,
            0,
        );
        w.end();
    }

    /// A dump of the sets, chains, rules or counters of a table, or of one set's elements.
    pub(crate) fn dump(w: &mut Writer, seq: u32, msg: u16, table: &str, set: Option<&str>) {
        w.begin(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            super::super::wire::NLM_F_DUMP,
            seq,
            NFPROTO_INET,
            0,
        );
        w.attr_str(NFTA_ANY_TABLE, table);
        if let Some(set) = set {
            w.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        }
        if msg == NFT_MSG_GETOBJ {
            w.attr_be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        }
        w.end();
    }
}

/// Whether a listed set, chain, rule or object belongs to our table.
pub(crate) fn in_our_table(msg: &Msg) -> bool {
    msg.nfgen_family() == Some(NFPROTO_INET)
        && msg.nf_attrs().get(NFTA_ANY_TABLE).and_then(|a| a.str()) == Some(TABLE)
}

/// The id in a generation message (the reply to a generation request, or a notice).
pub(crate) fn decode_generation(msg: &Msg) -> Option<u32> {
    if msg.kind() != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
        return None;
    }
    msg.nf_attrs().get(NFTA_GEN_ID).and_then(|a| a.be32())
}

/// The flags of a listed table.
pub(crate) fn decode_table_flags(msg: &Msg) -> u32 {
    msg.nf_attrs()
        .get(NFTA_TABLE_FLAGS)
        .and_then(|a| a.be32())
        .unwrap_or(0)
}

/// A listed counter object: its name and values, without allocating.
pub(crate) fn decode_counter<'a>(msg: &Msg<'a>) -> Option<(&'a str, u64, u64)> {
    let attrs = msg.nf_attrs();
    if attrs.get(NFTA_OBJ_TYPE).and_then(|a| a.be32()) != Some(NFT_OBJECT_COUNTER) {
        return None;
    }
    let name = attrs.get(NFTA_OBJ_NAME)?.str()?;
    let data = attrs.get(NFTA_OBJ_DATA)?.nested();
    let packets = data
        .get(NFTA_COUNTER_PACKETS)
        .and_then(|a| a.be64())
        .unwrap_or(0);
    let bytes = data
        .get(NFTA_COUNTER_BYTES)
        .and_then(|a| a.be64())
        .unwrap_or(0);
    Some((name, packets, bytes))
}

pub(crate) fn decode_counter_state(msg: &Msg) -> Option<CounterState> {
    decode_counter(msg).map(|(name, packets, bytes)| CounterState {
        name: name.to_string(),
        packets,
        bytes,
    })
}

/// A listed set or map, without its elements.
pub(crate) fn decode_set(msg: &Msg) -> Option<SetState> {
    let attrs = msg.nf_attrs();
    let name = attrs.get(NFTA_SET_NAME)?.str()?.to_string();
    let flags = attrs
        .get(NFTA_SET_FLAGS)
        .and_then(|a| a.be32())
        .unwrap_or(0);
    let key = attrs
        .get(NFTA_SET_KEY_TYPE)
        .and_then(|a| a.be32())
        .and_then(KeyType::from_id);
    let size = attrs
        .get(NFTA_SET_DESC)
        .and_then(|d| d.nested().get(NFTA_SET_DESC_SIZE))
        .and_then(|a| a.be32());
    let counter_map = flags & NFT_SET_OBJECT != 0
        && attrs.get(NFTA_SET_OBJ_TYPE).and_then(|a| a.be32()) == Some(NFT_OBJECT_COUNTER);
    Some(SetState {
        name,
        key,
        interval: flags & NFT_SET_INTERVAL != 0,
        timeout: flags & NFT_SET_TIMEOUT != 0,
        size,
        counter_map,
        dynamic: flags & NFT_SET_EVAL != 0,
        default_timeout: attrs
            .get(NFTA_SET_TIMEOUT)
            .and_then(|a| a.be64())
            .map(Duration::from_millis),
        elements: Vec::new(),
    })
}

/// One element as listed: its key, whether it ends an interval, its timeout and time left,
/// and for a counter map the counter it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawElement {
    pub(crate) key: KeyBytes,
    pub(crate) interval_end: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) expires: Option<Duration>,
    pub(crate) counter: Option<String>,
}

/// The elements of one NEWSETELEM message of a set element dump.
pub(crate) fn decode_elements(msg: &Msg, out: &mut Vec<RawElement>) {
    let Some(list) = msg.nf_attrs().get(NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return;
    };
    for elem in list.nested().filter(|a| a.kind() == NFTA_LIST_ELEM) {
        let attrs = elem.nested();
        let key = attrs
            .get(NFTA_SET_ELEM_KEY)
            .and_then(|k| k.nested().get(NFTA_DATA_VALUE));
        let Some(key) = key.filter(|v| !v.bytes().is_empty() && v.bytes().len() <= 16) else {
            continue;
        };
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
            key: KeyBytes::new(key.bytes()),
            interval_end: flags & NFT_SET_ELEM_INTERVAL_END != 0,
            timeout: ms(NFTA_SET_ELEM_TIMEOUT),
            expires: ms(NFTA_SET_ELEM_EXPIRATION),
            counter: attrs
                .get(NFTA_SET_ELEM_OBJREF)
                .and_then(|a| a.str())
                .map(str::to_string),
        });
    }
}

/// Turns listed elements into keys: single values as they are; for an interval set, each
/// start joined with the end that follows it (an open start runs to the top of the type).
/// Elements whose key does not fit the set's type are left out.
pub(crate) fn assemble_elements(
    key_type: KeyType,
    interval: bool,
    mut raw: Vec<RawElement>,
) -> Vec<ElementState> {
    let state = |e: RawElement, key| ElementState {
        key,
        timeout: e.timeout,
        expires: e.expires,
        counter: e.counter,
    };
    if !interval {
        return raw
            .into_iter()
            .filter(|e| !e.interval_end)
            .filter_map(|e| {
                let key = match e.key.value(key_type)? {
                    KeyValue::Addr(a) => Key::Addr(ElementKey::Cidr(crate::addr::Cidr::host(a))),
                    KeyValue::Port(p) => Key::Ports(p, p),
                    KeyValue::Byte(b) => Key::Byte(b),
                };
                Some(state(e, key))
            })
            .collect();
    }
    // Ascending by key; at equal keys an end sorts before the start of the next interval.
    raw.sort_by(|a, b| a.key.cmp(&b.key).then(b.interval_end.cmp(&a.interval_end)));
    let mut out = Vec::new();
    let mut open: Option<RawElement> = None;
    for e in raw {
        let end = if e.interval_end { Some(e.key) } else { None };
        if let Some(start) = open.take() {
            let key = interval_key(key_type, start.key, end);
            if let Some(key) = key {
                out.push(state(start, key));
            }
        }
        if !e.interval_end {
            open = Some(e);
        }
    }
    if let Some(start) = open {
        if let Some(key) = interval_key(key_type, start.key, None) {
            out.push(state(start, key));
        }
    }
    out
}

fn interval_key(key_type: KeyType, start: KeyBytes, end: Option<KeyBytes>) -> Option<Key> {
    let end = match end {
        Some(e) => Some(e.value(key_type)?),
        None => None,
    };
    match (start.value(key_type)?, end) {
        (KeyValue::Addr(a), Some(KeyValue::Addr(b))) => {
            Some(Key::Addr(ElementKey::from_interval(a, Some(b))))
        }
        (KeyValue::Addr(a), None) => Some(Key::Addr(ElementKey::from_interval(a, None))),
        (KeyValue::Port(a), Some(KeyValue::Port(b))) => Some(Key::Ports(a, b.checked_sub(1)?)),
        (KeyValue::Port(a), None) => Some(Key::Ports(a, u16::MAX)),
        (KeyValue::Byte(a), _) => Some(Key::Byte(a)),
        _ => None,
    }
}

/// A listed chain (its rules are listed separately).
pub(crate) fn decode_chain(msg: &Msg) -> Option<ChainState> {
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
            // NF_DROP is 0.
            policy_accept: policy != 0,
        }
    });
    Some(ChainState {
        name,
        hook,
        rules: Vec::new(),
    })
}

/// The chain a listed rule belongs to, and the rule: our expressions, or a description.
pub(crate) fn decode_rule(msg: &Msg) -> Option<(String, RuleState)> {
    let attrs = msg.nf_attrs();
    let chain = attrs.get(NFTA_RULE_CHAIN)?.str()?.to_string();
    let exprs = attrs
        .get(NFTA_RULE_EXPRESSIONS)
        .map(|a| a.nested())
        .unwrap_or(Attrs::new(&[]));
    let state = match expr::decode_all(exprs) {
        Ok(exprs) => RuleState::Known(exprs),
        Err(what) => RuleState::Unknown(what),
    };
    Some((chain, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Cidr;

    fn raw(key: &str, end: bool, expires_s: Option<u64>) -> RawElement {
        RawElement {
            key: KeyBytes::addr(key.parse().unwrap()),
            interval_end: end,
            timeout: expires_s.map(|_| Duration::from_secs(60)),
            expires: expires_s.map(Duration::from_secs),
            counter: None,
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
        let keys: Vec<String> = assemble_elements(KeyType::Ipv4Addr, true, listed)
            .iter()
            .map(|e| describe_key(&e.key))
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
    fn port_intervals_round_trip() {
        let ops = [
            ElementOp {
                counter: Some("tcp_80"),
                ..ElementOp::key(Key::Ports(80, 80))
            },
            ElementOp {
                counter: Some("tcp_8000-8100"),
                ..ElementOp::key(Key::Ports(8000, 8100))
            },
            ElementOp {
                counter: Some("tcp_65535"),
                ..ElementOp::key(Key::Ports(65535, 65535))
            },
        ];
        let mut batch = Batch::new(1);
        batch
            .add_elements(
                SetRef {
                    table: TABLE,
                    name: "svc_tcp",
                    interval: true,
                },
                &ops,
            )
            .unwrap();
        let bytes = batch.finish().to_vec();
        let mut raw = Vec::new();
        for msg in Msgs::new(&bytes) {
            decode_elements(&msg.unwrap(), &mut raw);
        }
        let got: Vec<(Key, Option<String>)> = assemble_elements(KeyType::InetService, true, raw)
            .into_iter()
            .map(|e| (e.key, e.counter))
            .collect();
        let want: Vec<(Key, Option<String>)> = ops
            .iter()
            .map(|o| (o.key, o.counter.map(str::to_string)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn elements_are_split_before_the_attribute_length_overflows() {
        let ops: Vec<ElementOp> = (0..10_000u32)
            .map(|i| ElementOp {
                timeout: Some(Duration::from_secs(60)),
                ..ElementOp::key(Key::Addr(ElementKey::Cidr(Cidr::host(IpAddr::V4(
                    (0x0a00_0000 + i).into(),
                )))))
            })
            .collect();
        let mut batch = Batch::new(1);
        batch
            .add_elements(
                SetRef {
                    table: TABLE,
                    name: "ban4",
                    interval: false,
                },
                &ops,
            )
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
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Every decoder of kernel listings survives random and mutated messages.
    #[test]
    fn decoders_never_panic_on_mutated_listings() {
        let spec = crate::ruleset::desired(&crate::config::Config::default());
        let mut batch = Batch::new(1);
        for name in &spec.counters {
            batch.add_counter(name);
        }
        for (i, set) in spec.sets.iter().enumerate() {
            batch.add_set(TABLE, set, i as u32);
            let ops: Vec<ElementOp> = set
                .elements
                .iter()
                .map(|(k, c)| ElementOp {
                    counter: Some(c),
                    ..ElementOp::key(*k)
                })
                .collect();
            batch
                .add_elements(
                    SetRef {
                        table: TABLE,
                        name: &set.name,
                        interval: set.interval,
                    },
                    &ops,
                )
                .unwrap();
        }
        for chain in &spec.chains {
            batch.add_chain_and_rules(chain).unwrap();
        }
        let seed = batch.finish().to_vec();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..5_000 {
            let mut bytes = seed.clone();
            for _ in 0..1 + round % 8 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let cut = (next() as usize) % (bytes.len() + 1);
            for msg in Msgs::new(&bytes[..cut]).flatten() {
                let _ = decode_set(&msg);
                let _ = decode_chain(&msg);
                let _ = decode_rule(&msg);
                let _ = decode_counter(&msg);
                let mut raw = Vec::new();
                decode_elements(&msg, &mut raw);
                let _ = assemble_elements(KeyType::InetService, true, raw.clone());
                let _ = assemble_elements(KeyType::Ipv6Addr, true, raw);
            }
        }
    }
}
