//! All kernel-facing code. [`Nft`] owns our one nf_tables socket and turns plain-data plans
//! (a `TableSpec`, a tick's `ruleset::change::Change`s) into atomic batches, then reads back
//! what the kernel holds. Submodules:
//! - `wire`: netlink message views (checked, zero-copy) and the message writer;
//! - `socket`: NETLINK_NETFILTER sockets, batches with every ACK checked, dumps;
//! - `nft`: nf_tables messages (table, chains, counters, sets, maps, rules, elements);
//! - `expr`: our rule expressions encoded for nf_tables, and decoded from its listings;
//! - `monitor`: the kernel's notifications of others' changes to our table;
//! - `nflog`: sampled packets over NFLOG, parsed into `nflog::PacketMeta`;
//! - `conntrack`: the conntrack table counted and dumped (ctnetlink), entries deleted;
//! - `diag`: the host's TCP and UDP sockets (sock_diag): listeners, SSH peers;
//! - `host`: the host's own addresses, gateways, name servers, fastest link (auto-safelist);
//! - `ipset`: ipsets over netlink, for the iptables compatibility chain;
//! - `shim`: the iptables compatibility chain in the kernel (ipsets and iptables tools);
//! - `sysctl`: the sysctls a measure changes for its duration (SYN cookies, conntrack loose);
//! - `testns` (unit tests only): a throwaway network namespace.

pub(crate) mod conntrack;
pub(crate) mod diag;
pub(crate) mod expr;
pub mod host;
pub(crate) mod ipset;
pub(crate) mod monitor;
pub(crate) mod nflog;
pub(crate) mod nft;
pub mod shim;
pub(crate) mod socket;
pub(crate) mod sysctl;
#[cfg(test)]
pub(crate) mod testns;
pub(crate) mod wire;

use std::collections::HashMap;
use std::time::Duration;

use crate::addr::{merge_intervals, Cidr};
use crate::ruleset::change::{InForce, Item};
use crate::ruleset::diff::TableDiff;
use crate::ruleset::expr::{Expr, Synproxy};
use crate::ruleset::{
    ChainHook, ChainSpec, ElementKey, Family, Key, SetRole, SetSpec, SetState, TableSpec,
    TableState, TABLE,
};
use nft::abi::*;
use nft::{ElementOp, RawElement, SetRef};
use socket::NftSocket;
use wire::Writer;

/// A failure talking to the kernel, naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{what}: {}{}", kernel_reason(*errno), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Kernel {
        what: String,
        errno: i32,
        detail: Option<String>,
    },
    #[error("malformed netlink reply: {0}")]
    Malformed(String),
    /// A batch the socket cannot send in one piece (the kernel would answer EMSGSIZE).
    #[error("send batch of {len} bytes: {reason}")]
    BatchTooLarge { len: usize, reason: String },
}

/// The kernel's errno in nf_tables' own terms where the C library's words mislead.
fn kernel_reason(errno: i32) -> String {
    match errno {
        libc::ENFILE => {
            "the set is full (its size is reached); the whole batch was refused".to_string()
        }
        _ => match ipset::reason(errno) {
            Some(words) => words.to_string(),
            None => std::io::Error::from_raw_os_error(errno).to_string(),
        },
    }
}

impl NlError {
    fn kernel(what: String, errno: i32, detail: Option<&str>) -> NlError {
        NlError::Kernel {
            what,
            errno,
            detail: detail.map(str::to_string),
        }
    }

    /// The errno the kernel answered with, if it was the kernel that refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            NlError::Io { source, .. } => source.raw_os_error(),
            NlError::Malformed(_) => None,
            NlError::BatchTooLarge { .. } => Some(libc::EMSGSIZE),
        }
    }
}

/// How a reply ends a request or a dump: None for any other message; Ok for NLMSG_DONE with
/// status 0 or an ACK; the kernel's error for a dump that failed part way (a negative status
/// in NLMSG_DONE) or a refused request. `what` names the request in the error.
pub(crate) fn reply_end(msg: &wire::Msg, what: &str) -> Option<Result<(), NlError>> {
    match msg.kind() {
        wire::NLMSG_DONE => {
            let status = msg
                .payload()
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i32::from_ne_bytes);
            Some(if status < 0 {
                Err(NlError::kernel(
                    what.to_string(),
                    status.saturating_neg(),
                    None,
                ))
            } else {
                Ok(())
            })
        }
        wire::NLMSG_ERROR => Some(match msg.error() {
            None => Err(NlError::Malformed(format!("{what}: short error message"))),
            Some(reply) if reply.code == 0 => Ok(()),
            Some(reply) => Err(NlError::kernel(
                what.to_string(),
                reply.code.saturating_neg(),
                reply.ext_msg,
            )),
        }),
        _ => None,
    }
}

impl From<wire::WireError> for NlError {
    fn from(e: wire::WireError) -> NlError {
        NlError::Malformed(e.to_string())
    }
}

/// What this kernel can do, found by trying it on a throwaway table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Table flags `owner` and `persist` (6.9+): nobody else can change our table, and it
    /// outlives us.
    pub(crate) owner_persist: bool,
    /// Re-adding an element with a timeout refreshes it; otherwise delete + add.
    pub(crate) timeout_refresh: bool,
    /// The `synproxy` statement (nft_synproxy, 5.3+): SYN floods get the SYN proxy, else
    /// SYN cookies only.
    pub(crate) synproxy: bool,
}

impl Features {
    /// The older-kernel mode, forced by `nft.compat = "legacy"`.
    pub(crate) const LEGACY: Features = Features {
        owner_persist: false,
        timeout_refresh: false,
        synproxy: false,
    };
}

const PROBE_TABLE: &str = "ftagent_probe";

/// Our nf_tables connection.
#[derive(Debug)]
pub struct Nft {
    sock: NftSocket,
    request: Writer,
}

impl Nft {
    pub fn open() -> Result<Nft, NlError> {
        Ok(Nft {
            sock: NftSocket::open()?,
            request: Writer::new(),
        })
    }

    /// Finds out which table flags and element updates this kernel supports. The probe table
    /// is owned by this socket without `persist`, so it vanishes with us whatever happens.
    pub(crate) fn probe(&mut self) -> Result<Features, NlError> {
        let mut batch = self.sock.batch();
        batch.add_named_table(PROBE_TABLE, NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST);
        batch.delete_named_table(PROBE_TABLE);
        let owner_persist = match self.sock.commit(&mut batch) {
            Ok(()) => true,
            Err(e) if matches!(e.errno(), Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)) => false,
            Err(e) => return Err(e),
        };
        let timeout_refresh = self.probe_timeout_refresh()?;
        Ok(Features {
            owner_persist,
            timeout_refresh,
            synproxy: self.probe_synproxy()?,
        })
    }

    /// Whether this kernel has the `synproxy` statement: a throwaway table with a SYN proxy
    /// rule on the input hook, added and deleted in one batch (nothing of it ever stays).
    pub(crate) fn probe_synproxy(&mut self) -> Result<bool, NlError> {
        let chain = ChainSpec {
            name: "probe",
            hook: ChainHook::Input,
            priority: 0,
            rules: vec![vec![Expr::Synproxy(Synproxy {
                mss: 1460,
                wscale: 7,
                timestamp: true,
                sack_perm: true,
            })]],
        };
        let mut batch = self.sock.batch();
        batch.add_named_table(PROBE_TABLE, 0);
        batch.add_chain_and_rules_in(PROBE_TABLE, &chain)?;
        batch.delete_named_table(PROBE_TABLE);
        match self.sock.commit(&mut batch) {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.errno(),
                    Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL)
                ) =>
            {
                log::debug!("no synproxy statement in this kernel: {e}");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn probe_timeout_refresh(&mut self) -> Result<bool, NlError> {
        let role = SetRole::Ban(Family::V4);
        let set = SetRef {
            table: PROBE_TABLE,
            name: role.name(),
            interval: false,
        };
        let key = Key::Addr(ElementKey::Cidr(Cidr::host([192, 0, 2, 1].into())));
        let op = |secs| ElementOp {
            timeout: Some(Duration::from_secs(secs)),
            ..ElementOp::key(key)
        };
        // Owned by this socket, so it vanishes with us whatever happens; a kernel before 5.12
        // has no table flag `owner` (EINVAL: Debian 11's 5.10): there the probe table is
        // unowned, deleted below like the other.
        let mut committed = Ok(());
        for flags in [NFT_TABLE_F_OWNER, 0] {
            let mut batch = self.sock.batch();
            batch.add_named_table(PROBE_TABLE, flags);
            batch.add_set(PROBE_TABLE, &SetSpec::for_role(role, Some(1)), 1);
            batch.add_elements(set, &[op(1000)])?;
            committed = self.sock.commit(&mut batch);
            match &committed {
                Err(e)
                    if flags != 0 && matches!(e.errno(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
                }
                _ => break,
            }
        }
        committed?;
        let mut batch = self.sock.batch();
        batch.add_elements(set, &[op(3000)])?;
        let refreshed = self.sock.commit(&mut batch).and_then(|()| {
            let listed = self.list_elements(PROBE_TABLE, role.name())?;
            Ok(listed
                .first()
                .and_then(|e| e.expires)
                .is_some_and(|x| x > Duration::from_secs(1000)))
        });
        let mut batch = self.sock.batch();
        batch.delete_named_table(PROBE_TABLE);
        self.sock.commit(&mut batch)?;
        refreshed
    }

    /// Our table as the kernel holds it, or None when there is none.
    pub fn table_state(&mut self) -> Result<Option<TableState>, NlError> {
        let Some(flags) = self.table_flags()? else {
            return Ok(None);
        };
        let mut counters = Vec::new();
        self.dump(NFT_MSG_GETOBJ, "list counters", &mut |m| {
            counters.extend(nft::decode_counter_state(m))
        })?;
        let sets = self.sets()?;
        let mut chains = Vec::new();
        self.dump(NFT_MSG_GETCHAIN, "list chains", &mut |m| {
            chains.extend(nft::decode_chain(m))
        })?;
        let mut rules = Vec::new();
        self.dump(NFT_MSG_GETRULE, "list rules", &mut |m| {
            rules.extend(nft::decode_rule(m))
        })?;
        for (chain_name, rule) in rules {
            if let Some(chain) = chains.iter_mut().find(|c| c.name == chain_name) {
                chain.rules.push(rule);
            }
        }
        Ok(Some(TableState {
            owner: flags & NFT_TABLE_F_OWNER != 0,
            persist: flags & NFT_TABLE_F_PERSIST != 0,
            counters,
            sets,
            chains,
        }))
    }

    /// The sets and maps of our table with their elements.
    pub fn sets(&mut self) -> Result<Vec<SetState>, NlError> {
        let mut sets = Vec::new();
        self.dump(NFT_MSG_GETSET, "list sets", &mut |m| {
            sets.extend(nft::decode_set(m))
        })?;
        for set in &mut sets {
            let raw = self.list_elements(TABLE, &set.name)?;
            if let Some(key) = set.key {
                set.elements = nft::assemble_elements(key, set.interval, raw);
            }
        }
        Ok(sets)
    }

    /// Reads every named counter of our table with one dump, passing name, packets and bytes
    /// to `on_counter`. Allocates nothing: the request and receive buffers are reused.
    pub(crate) fn read_counters(
        &mut self,
        on_counter: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<(), NlError> {
        self.dump(NFT_MSG_GETOBJ, "read counters", &mut |m| {
            if let Some((name, packets, bytes)) = nft::decode_counter(m) {
                on_counter(name, packets, bytes);
            }
        })
    }

    fn table_flags(&mut self) -> Result<Option<u32>, NlError> {
        self.request.clear();
        nft::request::get_table(&mut self.request, self.sock.take_seqs(1), TABLE);
        let mut flags = 0;
        match self
            .sock
            .request(&self.request, "get table inet ftagent", &mut |m| {
                flags = nft::decode_table_flags(m)
            }) {
            Ok(()) => Ok(Some(flags)),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Dumps the sets, chains, rules or counters of our table. The kernel filters some dumps
    /// by table and not others (chains), so every reply is checked.
    fn dump(
        &mut self,
        msg: u16,
        what: &str,
        on_msg: &mut dyn FnMut(&wire::Msg),
    ) -> Result<(), NlError> {
        self.request.clear();
        nft::request::dump(&mut self.request, self.sock.take_seqs(1), msg, TABLE, None);
        self.sock.request(&self.request, what, &mut |m| {
            if nft::in_our_table(m) {
                on_msg(m)
            }
        })
    }

    fn list_elements(&mut self, table: &str, set: &str) -> Result<Vec<RawElement>, NlError> {
        self.request.clear();
        nft::request::dump(
            &mut self.request,
            self.sock.take_seqs(1),
            NFT_MSG_GETSETELEM,
            table,
            Some(set),
        );
        let mut raw = Vec::new();
        let what = format!("list elements of set {set}");
        self.sock.request(&self.request, &what, &mut |m| {
            nft::decode_elements(m, &mut raw)
        })?;
        Ok(raw)
    }

    /// Installs our table in one transaction: an existing one is replaced (delete + add in the
    /// same batch), keeping its bans with the time they had left, so a restart neither
    /// duplicates nor forgets anything. Then reads the table back and checks it.
    #[cfg(test)]
    pub(crate) fn install(
        &mut self,
        spec: &TableSpec,
        safelist: &[Cidr],
        features: Features,
    ) -> Result<Installed, NlError> {
        self.install_with(spec, safelist, features, &[])
    }

    /// `install`, with the bans and measures `held` in force put in by the same transaction:
    /// what the kernel still holds is kept with the time it has left, what it lost (a table
    /// deleted by someone else, a restart) comes back with the time `held` says is left, and
    /// an element both know goes in once, with the longer of the two.
    pub(crate) fn install_with(
        &mut self,
        spec: &TableSpec,
        safelist: &[Cidr],
        features: Features,
        held: &[InForce],
    ) -> Result<Installed, NlError> {
        let existing = self.table_state()?;
        // Elements with timeouts in sets the new table still has (bans, aggregate measures;
        // not the meters, which the rules fill themselves).
        let timed: Vec<&SetSpec> = spec
            .sets
            .iter()
            .filter(|s| s.timeout && !s.dynamic)
            .collect();
        // (index in `timed`, element), each key once per set.
        let mut elements: Vec<(usize, ElementOp)> = Vec::new();
        let mut index: HashMap<(usize, Key), usize> = HashMap::new();
        let mut put = |set: usize, op: ElementOp<'static>| match index.get(&(set, op.key)) {
            Some(&i) => {
                let known = &mut elements[i].1;
                if known.expires < op.expires {
                    *known = op;
                }
                false
            }
            None => {
                index.insert((set, op.key), elements.len());
                elements.push((set, op));
                true
            }
        };
        let set_index = |name: &str| timed.iter().position(|s| s.name == name);
        let mut kept = 0;
        if let Some(old) = &existing {
            for set in &old.sets {
                let Some(i) = set_index(&set.name) else {
                    continue;
                };
                for e in &set.elements {
                    if let (Some(timeout), Some(expires)) = (e.timeout, e.expires) {
                        let op = ElementOp {
                            timeout: Some(timeout),
                            expires: Some(expires),
                            ..ElementOp::key(e.key)
                        };
                        kept += usize::from(put(i, op));
                    }
                }
            }
        }
        let mut put_back = 0;
        for h in held {
            let (name, key) = match h.item {
                Item::Ban(cidr) => (SetRole::for_ban(&cidr).name(), ban_key(cidr)),
                Item::Measure(m) => (m.set(), m.key()),
            };
            let Some(i) = set_index(name) else {
                continue;
            };
            let op = ElementOp {
                timeout: Some(h.timeout),
                expires: Some(h.left),
                ..ElementOp::key(key)
            };
            put_back += usize::from(put(i, op));
        }
        let mut batch = self.sock.batch();
        if existing.is_some() {
            batch.delete_table();
        }
        let flags = if features.owner_persist {
            NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST
        } else {
            0
        };
        batch.add_table(flags)?;
        for name in &spec.counters {
            batch.add_counter(name);
        }
        for (id, set) in spec.sets.iter().enumerate() {
            batch.add_set(TABLE, set, id as u32 + 1);
            let ops: Vec<ElementOp> = set
                .elements
                .iter()
                .map(|(key, counter)| ElementOp {
                    counter: Some(counter),
                    ..ElementOp::key(*key)
                })
                .collect();
            batch.add_elements(
                SetRef {
                    table: TABLE,
                    name: &set.name,
                    interval: set.interval,
                },
                &ops,
            )?;
        }
        for chain in &spec.chains {
            batch.add_chain_and_rules(chain)?;
        }
        let (v4, v6) = merge_intervals(safelist);
        let allow = |start: std::net::IpAddr, end: Option<std::net::IpAddr>| {
            ElementOp::key(Key::Addr(ElementKey::from_interval(start, end)))
        };
        let v4: Vec<ElementOp> = v4
            .into_iter()
            .map(|(s, e)| allow(s.into(), e.map(Into::into)))
            .collect();
        let v6: Vec<ElementOp> = v6
            .into_iter()
            .map(|(s, e)| allow(s.into(), e.map(Into::into)))
            .collect();
        batch.add_elements(set_ref(SetRole::Allow(Family::V4)), &v4)?;
        batch.add_elements(set_ref(SetRole::Allow(Family::V6)), &v6)?;
        for (i, set) in timed.iter().enumerate() {
            let ops: Vec<ElementOp> = elements
                .iter()
                .filter(|(s, _)| *s == i)
                .map(|(_, op)| *op)
                .collect();
            let target = SetRef {
                table: TABLE,
                name: &set.name,
                interval: set.interval,
            };
            batch.add_elements(target, &ops)?;
        }
        self.sock.commit(&mut batch)?;
        let state = self
            .table_state()?
            .ok_or_else(|| NlError::Malformed("table vanished right after install".into()))?;
        Ok(Installed {
            replaced: existing.is_some(),
            kept_bans: kept,
            put_back,
            differences: state.differences(spec),
        })
    }

    /// Changes the table in place, in one transaction (a reload whose rules are unchanged):
    /// counters and counter-map elements of service and reflector ports, safelist intervals.
    /// Counters and elements that stay keep their values.
    pub(crate) fn update(&mut self, diff: &TableDiff) -> Result<(), NlError> {
        let mut batch = self.sock.batch();
        for name in &diff.add_counters {
            batch.add_counter(name);
        }
        let map = |name, interval| SetRef {
            table: TABLE,
            name,
            interval,
        };
        for (name, interval, key) in &diff.remove_elements {
            batch.delete_elements(map(name, *interval), &[ElementOp::key(*key)])?;
        }
        for (name, interval, key, counter) in &diff.add_elements {
            let op = ElementOp {
                counter: Some(counter),
                ..ElementOp::key(*key)
            };
            batch.add_elements(map(name, *interval), &[op])?;
        }
        for name in &diff.remove_counters {
            batch.delete_counter(name);
        }
        for (role, key) in &diff.allow_remove {
            batch.delete_elements(set_ref(*role), &[ElementOp::key(*key)])?;
        }
        for (role, key) in &diff.allow_add {
            batch.add_elements(set_ref(*role), &[ElementOp::key(*key)])?;
        }
        self.sock.commit(&mut batch)
    }

    /// The ruleset's generation id: it changes with every committed transaction, anyone's.
    pub(crate) fn generation(&mut self) -> Result<u32, NlError> {
        self.request.clear();
        nft::request::get_generation(&mut self.request, self.sock.take_seqs(1));
        let mut id = None;
        self.sock
            .request(&self.request, "get ruleset generation", &mut |m| {
                id = nft::decode_generation(m).or(id)
            })?;
        id.ok_or_else(|| NlError::Malformed("no generation id in the reply".into()))
    }

    /// The port id of our nf_tables socket: the kernel names it in notifications of our
    /// own changes.
    pub(crate) fn port_id(&self) -> u32 {
        self.sock.port_id()
    }

    /// Bans (or re-bans, refreshing the timeout) an address or prefix.
    #[cfg(test)]
    pub(crate) fn ban(
        &mut self,
        cidr: Cidr,
        timeout: Duration,
        features: Features,
    ) -> Result<SetRole, NlError> {
        self.ban_many(&[cidr], timeout, features)?;
        Ok(SetRole::for_ban(&cidr))
    }

    /// Bans (or re-bans) every address and prefix of `cidrs` for `timeout`, in one
    /// transaction: all or none. Each set's elements go in a few large messages, each
    /// element once (a repeat would make the older kernels' delete fail).
    pub fn ban_many(
        &mut self,
        cidrs: &[Cidr],
        timeout: Duration,
        features: Features,
    ) -> Result<(), NlError> {
        let mut cidrs = cidrs.to_vec();
        cidrs.sort_unstable();
        cidrs.dedup();
        let mut batch = self.sock.batch();
        for role in SetRole::BANS {
            let ops: Vec<ElementOp> = cidrs
                .iter()
                .filter(|c| SetRole::for_ban(c) == role)
                .map(|&cidr| ElementOp {
                    timeout: Some(timeout),
                    ..ElementOp::key(ban_key(cidr))
                })
                .collect();
            if ops.is_empty() {
                continue;
            }
            batch.add_elements(set_ref(role), &ops)?;
            if !features.timeout_refresh {
                // Add (so the delete cannot fail), delete, add: a fresh timeout on any kernel.
                batch.delete_elements(set_ref(role), &ops)?;
                batch.add_elements(set_ref(role), &ops)?;
            }
        }
        self.sock.commit(&mut batch)
    }

    /// A tick's mitigation changes in one transaction: bans added or refreshed, bans lifted
    /// whether or not they are still there (an element is added with a short timeout before
    /// its delete, so a ban that ran out is no error).
    pub(crate) fn apply(
        &mut self,
        changes: &[crate::ruleset::change::Change],
        features: Features,
    ) -> Result<(), NlError> {
        use crate::ruleset::change::Change;
        let mut batch = self.sock.batch();
        for change in changes {
            let (set, key, timeout, lift) = match *change {
                Change::Ban { cidr, timeout } => (
                    set_ref(SetRole::for_ban(&cidr)),
                    ban_key(cidr),
                    timeout,
                    false,
                ),
                Change::Unban { cidr } => (
                    set_ref(SetRole::for_ban(&cidr)),
                    ban_key(cidr),
                    LIFT_TIMEOUT,
                    true,
                ),
                Change::Enable { measure, timeout } => {
                    (measure_ref(measure), measure.key(), timeout, false)
                }
                Change::Disable { measure } => {
                    (measure_ref(measure), measure.key(), LIFT_TIMEOUT, true)
                }
                Change::SynCookies { .. } => continue, // a sysctl, not the ruleset
            };
            let op = ElementOp {
                timeout: Some(timeout),
                ..ElementOp::key(key)
            };
            batch.add_elements(set, &[op])?;
            if lift || !features.timeout_refresh {
                batch.delete_elements(set, &[op])?;
            }
            if !lift && !features.timeout_refresh {
                batch.add_elements(set, &[op])?;
            }
        }
        self.sock.commit(&mut batch)
    }

    /// Lifts a ban. Returns false when there was none.
    pub fn unban(&mut self, cidr: Cidr) -> Result<bool, NlError> {
        let role = SetRole::for_ban(&cidr);
        let op = ElementOp::key(Key::Addr(ElementKey::Cidr(cidr)));
        let mut batch = self.sock.batch();
        batch.delete_elements(set_ref(role), &[op])?;
        match self.sock.commit(&mut batch) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes our table and everything in it. Returns false when there was none.
    pub fn remove_table(&mut self) -> Result<bool, NlError> {
        let mut batch = self.sock.batch();
        batch.delete_table();
        match self.sock.commit(&mut batch) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The timeout of the element added just before its delete when lifting a ban or measure.
const LIFT_TIMEOUT: Duration = Duration::from_secs(1);

fn ban_key(cidr: Cidr) -> Key {
    Key::Addr(ElementKey::Cidr(cidr))
}

fn measure_ref(measure: crate::ruleset::Measure) -> SetRef<'static> {
    SetRef {
        table: TABLE,
        name: measure.set(),
        interval: false,
    }
}

fn set_ref(role: SetRole) -> SetRef<'static> {
    SetRef {
        table: TABLE,
        name: role.name(),
        interval: role.interval(),
    }
}

/// What `install` found and did.
#[derive(Debug)]
pub(crate) struct Installed {
    /// There was a table already (from an earlier run), replaced atomically.
    pub(crate) replaced: bool,
    /// Bans and measures carried over from it.
    pub(crate) kept_bans: usize,
    /// Bans and measures in force that it had lost, put back.
    pub(crate) put_back: usize,
    /// How the table read back differs from the spec (empty when it matches).
    pub(crate) differences: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::testns::{is_root, Netns};
    use super::*;
    use crate::config::Config;
    use crate::ruleset::{desired, diff};
    use crate::sys::drop_net_admin;

    /// `count` distinct host addresses of 198.18.0.0/15 (v4) or 2001:db8::/32 (v6).
    fn hosts(count: u32, v6: bool) -> Vec<Cidr> {
        (0..count)
            .map(|i| {
                let addr: std::net::IpAddr = if v6 {
                    std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)).into()
                } else {
                    std::net::Ipv4Addr::from(0xc612_0000 + i).into()
                };
                Cidr::host(addr)
            })
            .collect()
    }

    /// `count` distinct prefixes, none adjacent to another: /31s of 198.19.0.0/16 (v4) or
    /// /64s of 2001:db8:1::/48 (v6).
    fn prefixes(count: u32, v6: bool) -> Vec<Cidr> {
        (0..count)
            .map(|i| {
                let (addr, len): (std::net::IpAddr, u8) = if v6 {
                    let net = 0x2001_0db8_0001_u128 << 80 | u128::from(2 * i) << 64;
                    (std::net::Ipv6Addr::from(net).into(), 64)
                } else {
                    (std::net::Ipv4Addr::from(0xc613_0000 + 4 * i).into(), 31)
                };
                Cidr::new(addr, len).unwrap()
            })
            .collect()
    }

    fn element_count(nft: &mut Nft, set: &str) -> usize {
        let sets = nft.sets().unwrap();
        sets.iter().find(|s| s.name == set).unwrap().elements.len()
    }

    /// Issue 15: the sets filled to their size in one transaction (65,536 addresses and
    /// 16,384 prefixes a family: a batch of ~17 MB with the older kernels' add+delete+add, far
    /// past the default 208 KiB send buffer).
    #[test]
    fn issue15_full_ban_sets_go_in_one_transaction() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, nft)");
            return;
        }
        let ns = Netns::create("full").expect("a network namespace");
        ns.run(|| {
            let config = Config::default();
            let mut nft = Nft::open().unwrap();
            nft.install(&desired(&config), &[], Features::LEGACY)
                .unwrap();
            let (v4, v6) = (
                hosts(config.nft.ban4_size, false),
                hosts(config.nft.ban6_size, true),
            );
            let net4 = prefixes(config.nft.bannet4_size, false);
            let net6 = prefixes(config.nft.bannet6_size, true);
            let all: Vec<Cidr> = [&v4, &v6, &net4, &net6]
                .into_iter()
                .flatten()
                .copied()
                .collect();
            let timeout = Duration::from_secs(600);
            let started = std::time::Instant::now();
            nft.ban_many(&all, timeout, Features::LEGACY).unwrap();
            eprintln!(
                "issue15: {} bans in one transaction: {:.2?}",
                all.len(),
                started.elapsed()
            );
            assert_eq!(element_count(&mut nft, "ban4"), v4.len());
            assert_eq!(element_count(&mut nft, "ban6"), v6.len());
            assert_eq!(element_count(&mut nft, "bannet4"), net4.len());
            assert_eq!(element_count(&mut nft, "bannet6"), net6.len());
            // One more is past the set's size: refused, and nothing of the batch goes in.
            let more = hosts(config.nft.ban4_size + 1, false);
            let mut extra = more[more.len() - 1..].to_vec();
            extra.extend(hosts(1, true).iter().map(|c| Cidr::host(next(c.addr()))));
            let err = nft.ban_many(&extra, timeout, Features::LEGACY).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENFILE), "{err}");
            assert_eq!(element_count(&mut nft, "ban6"), v6.len());
        });
    }

    fn next(addr: std::net::IpAddr) -> std::net::IpAddr {
        match addr {
            std::net::IpAddr::V6(a) => std::net::Ipv6Addr::from(u128::from(a) + 1_000_000).into(),
            std::net::IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) + 1).into(),
        }
    }

    /// Issue 15: without CAP_NET_ADMIN the send buffer stays capped by net.core.wmem_max; a
    /// batch past it is refused before it is sent, with the reason, not EMSGSIZE.
    #[test]
    fn issue15_a_batch_past_a_buffer_that_cannot_grow_is_refused_with_the_reason() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace)");
            return;
        }
        let ns = Netns::create("sndbuf").expect("a network namespace");
        ns.run(|| {
            drop_net_admin();
            let mut nft = Nft::open().unwrap();
            // Past twice the cap (the kernel doubles what it is asked for): each IPv6 element
            // with a timeout takes 40 bytes.
            let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let ops: Vec<ElementOp> = hosts(cap / 16, true)
                .into_iter()
                .map(|c| ElementOp {
                    timeout: Some(Duration::from_secs(60)),
                    ..ElementOp::key(ban_key(c))
                })
                .collect();
            let mut batch = nft.sock.batch();
            batch
                .add_elements(set_ref(SetRole::Ban(Family::V6)), &ops)
                .unwrap();
            let err = nft.sock.commit(&mut batch).unwrap_err();
            assert_eq!(err.errno(), Some(libc::EMSGSIZE), "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with("send batch of ")
                    && text.contains("net.core.wmem_max")
                    && text.contains("CAP_NET_ADMIN"),
                "{text}"
            );
        });
    }

    /// Issue 15: a batch of 100k+ messages gets 100k+ replies, all read: every ACK when it
    /// commits; every refusal (each message deletes an element that is not there) when it
    /// does not, the first one named; and the socket serves the next batch as usual.
    #[test]
    fn issue15_a_hundred_thousand_replies_are_all_read() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, nft)");
            return;
        }
        let ns = Netns::create("acks").expect("a network namespace");
        ns.run(|| {
            let mut nft = Nft::open().unwrap();
            nft.install(&desired(&Config::default()), &[], Features::LEGACY)
                .unwrap();
            let one = |cidr: Cidr| {
                [ElementOp {
                    timeout: Some(Duration::from_secs(600)),
                    ..ElementOp::key(ban_key(cidr))
                }]
            };
            let (v4, v6) = (hosts(60_000, false), hosts(45_000, true));
            let mut batch = nft.sock.batch();
            for cidr in v4.iter().chain(&v6) {
                let role = SetRole::for_ban(cidr);
                batch.add_elements(set_ref(role), &one(*cidr)).unwrap();
            }
            assert!(batch.acked_count() > 100_000);
            nft.sock.commit(&mut batch).unwrap();
            assert_eq!(element_count(&mut nft, "ban4"), v4.len());
            assert_eq!(element_count(&mut nft, "ban6"), v6.len());

            let absent = hosts(105_000, true);
            let mut batch = nft.sock.batch();
            for cidr in &absent[v6.len()..] {
                batch
                    .add_elements(set_ref(SetRole::Ban(Family::V4)), &one(v4[0]))
                    .unwrap();
                batch
                    .delete_elements(set_ref(SetRole::Ban(Family::V6)), &one(*cidr))
                    .unwrap();
            }
            assert!(batch.acked_count() > 100_000);
            let err = nft.sock.commit(&mut batch).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
            let first = absent[v6.len()];
            assert!(
                err.to_string()
                    .contains(&format!("delete element {first} ")),
                "{err}"
            );
            assert_eq!(element_count(&mut nft, "ban6"), v6.len(), "rolled back");

            let late: Cidr = "198.19.255.1".parse().unwrap();
            nft.ban(late, Duration::from_secs(60), Features::LEGACY)
                .unwrap();
            assert_eq!(element_count(&mut nft, "ban4"), v4.len() + 1);
        });
    }

    /// A reload's diff in one batch, in a real kernel: a service's port range widened (its
    /// interval map elements and counters replaced), a reflector port dropped, the safelist
    /// changed in both families (an interval replaced by a wider one).
    #[test]
    fn update_changes_elements_in_place() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, nft)");
            return;
        }
        let ns = Netns::create("update").expect("a network namespace");
        ns.run(|| {
            let path = std::path::Path::new("t.toml");
            let old = Config::from_toml(
                "[[service]]\nport = \"8000-8100\"\nproto = \"udp\"\n[sense]\namplification_ports = [53, 123]\n",
                path,
            )
            .unwrap();
            let new = Config::from_toml(
                "[[service]]\nport = \"8000-8200\"\nproto = \"udp\"\n[sense]\namplification_ports = [53]\n",
                path,
            )
            .unwrap();
            let cidrs = |list: &[&str]| -> Vec<Cidr> { list.iter().map(|c| c.parse().unwrap()).collect() };
            let (safe_old, safe_new) = (
                cidrs(&["10.250.9.0/24", "fd00:250::99"]),
                cidrs(&["10.250.8.0/24", "10.250.9.0/24", "fd00:250::98"]),
            );
            let mut nft = Nft::open().unwrap();
            nft.install(&desired(&old), &safe_old, Features::LEGACY).unwrap();
            let d = diff::diff(&desired(&old), &desired(&new), &safe_old, &safe_new).unwrap();
            assert!(!d.is_empty());
            nft.update(&d).unwrap();
            let state = nft.table_state().unwrap().unwrap();
            assert_eq!(state.differences(&desired(&new)), Vec::<String>::new());
            let allow = |name: &str| -> Vec<String> {
                let set = state.sets.iter().find(|s| s.name == name).unwrap();
                set.elements.iter().map(|e| format!("{:?}", e.key)).collect()
            };
            let want = |list: &[&str]| -> Vec<String> {
                list.iter()
                    .map(|c| format!("{:?}", Key::Addr(ElementKey::Cidr(c.parse().unwrap()))))
                    .collect()
            };
            assert_eq!(allow("allow4"), want(&["10.250.8.0/23"]));
            assert_eq!(allow("allow6"), want(&["fd00:250::98"]));
            assert!(state.counter("amp_123").is_none() && state.counter("udp_8000-8200").is_some());
        });
    }

    /// Issue 15: this kernel has the `synproxy` statement; the probe leaves no table behind;
    /// the SYN proxy's input chain is written and read back as it was meant (no difference,
    /// rendered as nft lists it).
    #[test]
    fn issue15_the_syn_proxy_chain_is_probed_written_and_read_back() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, nft)");
            return;
        }
        let ns = Netns::create("synproxy").expect("a network namespace");
        ns.run(|| {
            let mut nft = Nft::open().unwrap();
            assert!(nft.probe_synproxy().unwrap());
            let tables = std::process::Command::new("nft")
                .args(["list", "tables"])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&tables.stdout), "", "nothing left");
            let spec = desired(&Config::default());
            nft.install(&spec, &[], Features::LEGACY).unwrap();
            let state = nft.table_state().unwrap().unwrap();
            assert_eq!(state.differences(&spec), Vec::<String>::new());
            let text = state.render();
            assert!(
                text.contains("type filter hook input priority -190; policy accept;")
                    && text.contains("synproxy mss 1440 wscale 7 timestamp sack-perm")
                    && text.contains("tcp dport @syn_proxy notrack"),
                "{text}"
            );
        });
    }
}
