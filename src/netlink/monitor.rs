//! What other processes do to our table, as the kernel announces it: a non-blocking
//! NETLINK_NETFILTER socket subscribed to the nf_tables notifications (NFNLGRP_NFTABLES),
//! drained to WouldBlock into a buffer allocated once and walked without allocating. Changes
//! made through our own nf_tables socket (its port id) are not anyone else's; every new
//! generation is noted, so a periodic generation check can tell lost notifications.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::nft::abi::*;
use super::socket::{open_netfilter, recv_into, Blocking};
use super::wire::{Msg, Msgs};
use super::NlError;
use crate::ruleset::expr::{NFPROTO_IPV4, NFPROTO_IPV6};
use crate::ruleset::shim::{CHAIN as SHIM_CHAIN, HOOK_CHAIN};
use crate::ruleset::TABLE;

/// `enum nfnetlink_groups` in linux/netfilter/nfnetlink.h.
const NFNLGRP_NFTABLES: libc::c_int = 7;
/// Room for a large transaction's notifications (a `flush ruleset` of a big ruleset).
const SOCKET_RCVBUF: usize = 4 * 1024 * 1024;
const RECV_BUF: usize = 64 * 1024;
/// The longest process name the kernel reports (TASK_COMM_LEN).
const COMM_LEN: usize = 16;

/// Who committed a change: the process id and name the kernel put in the generation notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Committer {
    pub(crate) pid: u32,
    name: [u8; COMM_LEN],
    len: u8,
}

impl Committer {
    pub(crate) fn name(&self) -> &str {
        std::str::from_utf8(&self.name[..self.len as usize]).unwrap_or("?")
    }

    fn from_gen(msg: &Msg) -> Committer {
        let attrs = msg.nf_attrs();
        let mut who = Committer {
            pid: attrs
                .get(NFTA_GEN_PROC_PID)
                .and_then(|a| a.be32())
                .unwrap_or(0),
            ..Committer::default()
        };
        if let Some(name) = attrs.get(NFTA_GEN_PROC_NAME).and_then(|a| a.str()) {
            let bytes = name.as_bytes();
            let mut len = bytes.len().min(COMM_LEN);
            while !name.is_char_boundary(len) {
                len -= 1;
            }
            who.name[..len].copy_from_slice(&bytes[..len]);
            who.len = len as u8;
        }
        who
    }
}

/// What other processes did to our table since the last drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tampering {
    /// Our table was deleted (`delete table`, `flush ruleset`).
    pub(crate) table_deleted: bool,
    /// Chains, rules, sets, counters or elements deleted, or the table, chains, rules, sets
    /// or counters added or changed — by someone else.
    pub(crate) changes: u32,
    /// The kernel dropped notifications (ENOBUFS): what happened is unknown.
    pub(crate) lost: bool,
    /// The process that committed the first such change, when the kernel named it.
    pub(crate) by: Option<Committer>,
    /// Someone deleted an iptables-nft `filter` table, the compatibility chain, or rules of it
    /// or of the chain that jumps to it (firewalld's reload runs `iptables -F; -X`): the
    /// chain is worth checking now rather than at its periodic check.
    pub(crate) shim_touched: bool,
}

impl Tampering {
    #[cfg(test)]
    pub(crate) fn any(&self) -> bool {
        self.table_deleted || self.changes > 0 || self.lost
    }
}

/// The subscribed socket.
#[derive(Debug)]
pub(crate) struct TableMonitor {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// Port id of our own nf_tables socket: its changes are ours.
    own_port: u32,
    /// The newest ruleset generation announced.
    generation: Option<u32>,
    /// A change to our table was seen and its generation notice not yet.
    awaiting_committer: bool,
    /// After our own commit put the table right: what others did before it is forgotten, up
    /// to our commit's generation notice.
    settling: bool,
    seen: Tampering,
}

impl TableMonitor {
    /// Subscribes to the nf_tables notifications of this network namespace. `own_port` is the
    /// port id of the socket our own changes are made through.
    pub(crate) fn open(own_port: u32) -> Result<TableMonitor, NlError> {
        let (fd, _) = open_netfilter("nf_tables notifications", SOCKET_RCVBUF, Blocking::No)?;
        membership(&fd, libc::NETLINK_ADD_MEMBERSHIP).map_err(|source| NlError::Io {
            op: "subscribe to nf_tables notifications",
            source,
        })?;
        Ok(TableMonitor {
            fd,
            buf: vec![0; RECV_BUF],
            own_port,
            generation: None,
            awaiting_committer: false,
            settling: false,
            seen: Tampering::default(),
        })
    }

    /// Leaves the notification group while one of our own large transactions commits: with
    /// no listener the kernel builds no notices, one per element otherwise (most of the time
    /// a commit of full sets takes). `unmute` right after.
    pub(crate) fn mute(&mut self) {
        if let Err(e) = membership(&self.fd, libc::NETLINK_DROP_MEMBERSHIP) {
            log::warn!("nf_tables notifications: leaving the group: {e}");
        }
    }

    /// Joins the group again after `mute`. What anyone committed meanwhile was not announced,
    /// so the generation is unknown until the next notice: the generation check reads the
    /// table back then.
    pub(crate) fn unmute(&mut self) {
        if let Err(e) = membership(&self.fd, libc::NETLINK_ADD_MEMBERSHIP) {
            log::error!("nf_tables notifications: joining the group again: {e}");
        }
        self.generation = None;
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The newest generation announced so far (None before the first).
    pub(crate) fn generation(&self) -> Option<u32> {
        self.generation
    }

    /// Takes `generation` as announced: the caller read the kernel's generation and then
    /// checked our table, whose notices were lost.
    pub(crate) fn assume_generation(&mut self, generation: u32) {
        self.generation = Some(generation);
    }

    /// Reads every queued notification (edge-triggered: until WouldBlock) and returns what
    /// others did to our table since the last call, in whole transactions. Allocates nothing.
    pub(crate) fn drain(&mut self) -> Tampering {
        loop {
            let n = match recv_into(&self.fd, &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        self.seen.lost = true;
                        self.settling = false;
                        continue;
                    }
                    Some(libc::EAGAIN) => break,
                    _ => {
                        log::warn!("nf_tables notifications: recv failed: {e}");
                        break;
                    }
                },
            };
            let len = n.min(self.buf.len());
            let (buf, seen) = (&self.buf[..len], &mut self.seen);
            for msg in Msgs::new(buf).flatten() {
                note(
                    &msg,
                    self.own_port,
                    seen,
                    &mut self.generation,
                    &mut self.awaiting_committer,
                    &mut self.settling,
                );
            }
        }
        // A transaction's notifications end with its NEWGEN, and may come in several reads:
        // until it is here, the rest (a table's deletion after its rules' and counters') may
        // still be on the way, so nothing is reported from half a transaction.
        if self.awaiting_committer && !self.seen.lost {
            return Tampering::default();
        }
        std::mem::take(&mut self.seen)
    }

    /// Called right after our own commit restored the table: the notifications of what others
    /// committed before it (all queued by then: commits are serialised) are forgotten, so one
    /// deletion seen in two halves — our counter dump missing counters, then its notices —
    /// is not put right twice. Returns what others did after our commit.
    pub(crate) fn settle(&mut self) -> Tampering {
        self.seen = Tampering::default();
        self.awaiting_committer = false;
        self.settling = true;
        self.drain()
    }
}

/// Joins or leaves (`NETLINK_ADD_MEMBERSHIP`/`NETLINK_DROP_MEMBERSHIP`) the nf_tables group.
fn membership(fd: &OwnedFd, option: libc::c_int) -> std::io::Result<()> {
    let group = NFNLGRP_NFTABLES;
    crate::sys::setsockopt(fd, libc::SOL_NETLINK, option, &group)
}

/// Folds one notification into `seen`.
fn note(
    msg: &Msg,
    own_port: u32,
    seen: &mut Tampering,
    generation: &mut Option<u32>,
    awaiting_committer: &mut bool,
    settling: &mut bool,
) {
    if msg.kind() >> 8 != NFNL_SUBSYS_NFTABLES {
        return;
    }
    let kind = msg.kind() & 0xff;
    if kind == NFT_MSG_NEWGEN {
        if let Some(id) = super::nft::decode_generation(msg) {
            *generation = Some(id);
        }
        if *settling {
            // Ours ends what is forgotten.
            *settling = msg.port_id() != own_port;
            return;
        }
        if std::mem::take(awaiting_committer) && seen.by.is_none() {
            seen.by = Some(Committer::from_gen(msg));
        }
        return;
    }
    if msg.port_id() != own_port && touches_the_shim(msg, kind) {
        seen.shim_touched = true;
    }
    if *settling || msg.port_id() == own_port || !names_our_table(msg) {
        return;
    }
    match kind {
        NFT_MSG_DELTABLE => seen.table_deleted = true,
        // Someone else's bans are no harm to our rules; everything else is.
        NFT_MSG_NEWSETELEM => return,
        NFT_MSG_NEWTABLE | NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN | NFT_MSG_NEWRULE
        | NFT_MSG_DELRULE | NFT_MSG_NEWSET | NFT_MSG_DELSET | NFT_MSG_DELSETELEM
        | NFT_MSG_NEWOBJ | NFT_MSG_DELOBJ => seen.changes = seen.changes.saturating_add(1),
        _ => return,
    }
    *awaiting_committer = true;
}

/// Whether a notification is about `table inet ftagent`: the table's own messages carry its
/// name in NFTA_TABLE_NAME, the others in their table attribute; both are attribute 1.
fn names_our_table(msg: &Msg) -> bool {
    msg.nfgen_family() == Some(NFPROTO_INET)
        && msg.nf_attrs().get(NFTA_TABLE_NAME).and_then(|a| a.str()) == Some(TABLE)
}

/// Whether a notification deletes where iptables-nft keeps the compatibility chain: `table
/// ip filter` or `table ip6 filter` itself, the chain, or a rule of the chain or of the chain
/// that jumps to it. Others' rules elsewhere (Fail2Ban's unbans) are not.
fn touches_the_shim(msg: &Msg, kind: u16) -> bool {
    if !matches!(msg.nfgen_family(), Some(NFPROTO_IPV4 | NFPROTO_IPV6)) {
        return false;
    }
    let attrs = msg.nf_attrs();
    if attrs.get(NFTA_ANY_TABLE).and_then(|a| a.str()) != Some("filter") {
        return false;
    }
    let named = |attr: u16, names: &[&str]| {
        attrs
            .get(attr)
            .and_then(|a| a.str())
            .is_some_and(|name| names.contains(&name))
    };
    match kind {
        NFT_MSG_DELTABLE => true,
        NFT_MSG_DELCHAIN => named(NFTA_CHAIN_NAME, &[SHIM_CHAIN]),
        NFT_MSG_DELRULE => named(NFTA_RULE_CHAIN, &[SHIM_CHAIN, HOOK_CHAIN]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::wire::Writer;

    fn notification(kind: u16, port: u32, table: &str) -> Vec<u8> {
        let mut w = Writer::new();
        w.begin((NFNL_SUBSYS_NFTABLES << 8) | kind, 0, 0, NFPROTO_INET, 0);
        w.attr_str(NFTA_ANY_TABLE, table);
        w.end();
        let mut bytes = w.bytes().to_vec();
        bytes[12..16].copy_from_slice(&port.to_ne_bytes());
        bytes
    }

    fn new_gen(id: u32, pid: u32, name: &str) -> Vec<u8> {
        let mut w = Writer::new();
        w.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN, 0, 0, 0, 0);
        w.attr_be32(NFTA_GEN_ID, id);
        w.attr_be32(NFTA_GEN_PROC_PID, pid);
        w.attr_str(NFTA_GEN_PROC_NAME, name);
        w.end();
        w.bytes().to_vec()
    }

    fn fold(datagram: &[u8]) -> (Tampering, Option<u32>) {
        fold_from(datagram, false)
    }

    /// `note` over a datagram, from `settling` (after our own commit) or not.
    fn fold_from(datagram: &[u8], mut settling: bool) -> (Tampering, Option<u32>) {
        let (mut seen, mut generation, mut awaiting) = (Tampering::default(), None, false);
        for msg in Msgs::new(datagram).flatten() {
            note(
                &msg,
                7,
                &mut seen,
                &mut generation,
                &mut awaiting,
                &mut settling,
            );
        }
        (seen, generation)
    }

    #[test]
    fn after_our_restore_what_came_before_it_is_forgotten() {
        let mut bytes = notification(NFT_MSG_DELOBJ, 99, TABLE);
        bytes.extend(notification(NFT_MSG_DELTABLE, 99, TABLE));
        bytes.extend(new_gen(42, 1234, "nft"));
        bytes.extend(notification(NFT_MSG_NEWTABLE, 7, TABLE));
        let mut ours = new_gen(43, 1, "ftagent");
        ours[12..16].copy_from_slice(&7u32.to_ne_bytes());
        bytes.extend(ours);
        let (seen, generation) = fold_from(&bytes, true);
        assert!(!seen.any(), "{seen:?}");
        assert_eq!(generation, Some(43));
        // What others do after our commit is seen.
        bytes.extend(notification(NFT_MSG_DELRULE, 99, TABLE));
        bytes.extend(new_gen(44, 1234, "nft"));
        let (seen, _) = fold_from(&bytes, true);
        assert_eq!(seen.changes, 1);
        assert_eq!(seen.by.map(|b| b.pid), Some(1234));
    }

    /// An iptables-nft notification: `kind` in `table <family> filter`, naming `chain`.
    fn iptables_notice(kind: u16, family: u8, chain: Option<&str>) -> Vec<u8> {
        let mut w = Writer::new();
        w.begin((NFNL_SUBSYS_NFTABLES << 8) | kind, 0, 0, family, 0);
        w.attr_str(NFTA_ANY_TABLE, "filter");
        if let Some(chain) = chain {
            let attr = if kind == NFT_MSG_DELCHAIN {
                NFTA_CHAIN_NAME
            } else {
                NFTA_RULE_CHAIN
            };
            w.attr_str(attr, chain);
        }
        w.end();
        let mut bytes = w.bytes().to_vec();
        bytes[12..16].copy_from_slice(&4321u32.to_ne_bytes());
        bytes
    }

    /// Issue 17: firewalld's reload (`iptables -F; -X`) deletes the compatibility chain and
    /// its jump; the notices ask for the chain's check at once. Fail2Ban's rules coming and
    /// going in its own chains do not, and none of it is damage to our table.
    #[test]
    fn issue17_others_deleting_the_iptables_chain_or_its_jump_ask_for_its_check() {
        for (kind, family, chain) in [
            (NFT_MSG_DELCHAIN, NFPROTO_IPV4, Some(SHIM_CHAIN)),
            (NFT_MSG_DELCHAIN, NFPROTO_IPV6, Some(SHIM_CHAIN)),
            (NFT_MSG_DELRULE, NFPROTO_IPV4, Some(HOOK_CHAIN)),
            (NFT_MSG_DELRULE, NFPROTO_IPV6, Some(SHIM_CHAIN)),
            (NFT_MSG_DELTABLE, NFPROTO_IPV4, None),
        ] {
            let (seen, _) = fold(&iptables_notice(kind, family, chain));
            assert!(seen.shim_touched, "{kind} {family} {chain:?}");
            assert!(!seen.any(), "not our table: {seen:?}");
        }
        for (kind, family, chain) in [
            (NFT_MSG_DELRULE, NFPROTO_IPV4, Some("f2b-sshd")),
            (NFT_MSG_DELCHAIN, NFPROTO_IPV4, Some("f2b-sshd")),
            (NFT_MSG_NEWRULE, NFPROTO_IPV4, Some(HOOK_CHAIN)),
            (NFT_MSG_DELCHAIN, NFPROTO_INET, Some(SHIM_CHAIN)),
        ] {
            let (seen, _) = fold(&iptables_notice(kind, family, chain));
            assert!(!seen.shim_touched, "{kind} {family} {chain:?}");
        }
    }

    #[test]
    fn others_deleting_our_table_is_seen_with_who_did_it() {
        let mut bytes = notification(NFT_MSG_DELRULE, 99, TABLE);
        bytes.extend(notification(NFT_MSG_DELTABLE, 99, TABLE));
        bytes.extend(new_gen(42, 1234, "nft"));
        let (seen, generation) = fold(&bytes);
        assert!(seen.table_deleted && seen.any());
        assert_eq!(seen.changes, 1);
        assert_eq!(generation, Some(42));
        let by = seen.by.unwrap();
        assert_eq!((by.pid, by.name()), (1234, "nft"));
    }

    #[test]
    fn our_own_changes_other_tables_and_new_elements_are_not_tampering() {
        let mut bytes = notification(NFT_MSG_DELTABLE, 7, TABLE);
        bytes.extend(notification(NFT_MSG_DELTABLE, 99, "firewalld"));
        bytes.extend(notification(NFT_MSG_NEWSETELEM, 99, TABLE));
        bytes.extend(new_gen(43, 1, "firewalld"));
        let (seen, generation) = fold(&bytes);
        assert!(!seen.any(), "{seen:?}");
        assert_eq!(seen.by, None);
        assert_eq!(generation, Some(43));
    }

    /// In a throwaway namespace: our own install is not tampering and its generation is
    /// announced; `nft delete table` by another process is seen, named, and explained.
    #[test]
    fn root_sees_another_process_delete_our_table() {
        use crate::netlink::testns::{is_root, Netns};
        use crate::netlink::{Features, Nft};
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, nft)");
            return;
        }
        let ns = Netns::create("monitor").expect("a network namespace");
        let name = ns.name.clone();
        let (ours, theirs, gen_after) = ns.run(move || {
            let mut nft = Nft::open().unwrap();
            let mut monitor = TableMonitor::open(nft.port_id()).unwrap();
            let spec = crate::ruleset::desired(&crate::config::Config::default());
            nft.install(&spec, &[], Features::LEGACY).unwrap();
            let ours = monitor.drain();
            assert_eq!(monitor.generation(), Some(nft.generation().unwrap()));
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &name, "nft", "delete table inet ftagent"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let theirs = monitor.drain();
            (
                ours,
                theirs,
                (monitor.generation(), nft.generation().unwrap()),
            )
        });
        assert!(!ours.any(), "{ours:?}");
        assert!(theirs.table_deleted, "{theirs:?}");
        assert!(
            theirs.changes > 0,
            "its chains and sets went with it: {theirs:?}"
        );
        assert_eq!(theirs.by.map(|b| b.name().to_string()), Some("nft".into()));
        assert_eq!(gen_after.0, Some(gen_after.1));
    }

    #[test]
    fn mutated_notifications_never_panic() {
        let mut seed = notification(NFT_MSG_DELSET, 99, TABLE);
        seed.extend(new_gen(44, 5, "a-very-long-process-name"));
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..5_000 {
            let mut bytes = seed.clone();
            for _ in 0..1 + round % 6 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % bytes.len();
                bytes[at] = (state >> 32) as u8;
            }
            let cut = (state as usize >> 8) % (bytes.len() + 1);
            let _ = fold(&bytes[..cut]);
        }
    }
}
