//! The iptables compatibility chain as plain data: which iptables backend it goes in, our
//! ipsets, the `FTAGENT` chain's one rule per family and the jump from `INPUT`, and which
//! ipset a ban or a safelist entry belongs in. Touches nothing: `netlink::shim` applies it.

use std::time::Duration;

use crate::addr::Cidr;
use crate::config::{Config, IptablesShim};

/// Our chain in the iptables `filter` table (v4 and v6).
pub(crate) const CHAIN: &str = "FTAGENT";
/// The built-in chain that jumps to ours.
pub(crate) const HOOK_CHAIN: &str = "INPUT";

/// Every name ours, so `rules flush` knows what to remove even after a configuration change.
pub(crate) const BAN4: &str = "ftagent-ban4";
pub(crate) const BAN6: &str = "ftagent-ban6";
pub(crate) const IP4: &str = "ftagent-ip4";
pub(crate) const IP6: &str = "ftagent-ip6";
pub(crate) const NET4: &str = "ftagent-net4";
pub(crate) const NET6: &str = "ftagent-net6";
pub(crate) const SAFE4: &str = "ftagent-safe4";
pub(crate) const SAFE6: &str = "ftagent-safe6";
/// In the order they can be destroyed (a list:set before its members).
pub(crate) const ALL_SETS: [&str; 8] = [BAN4, BAN6, IP4, IP6, NET4, NET6, SAFE4, SAFE6];

/// The longest element timeout ipset takes, in seconds.
pub(crate) const MAX_TIMEOUT_SECS: u32 = (u32::MAX >> 1) / 1000;

/// The set types we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetType {
    /// Single addresses, with per-element timeouts.
    HashIp,
    /// Prefixes, with per-element timeouts (or none, for the safelist).
    HashNet,
    /// A set of sets: one match rule covers its members.
    ListSet,
}

impl SetType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashNet => "hash:net",
            SetType::ListSet => "list:set",
        }
    }
}

/// One set as it should exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpsetSpec {
    pub(crate) name: &'static str,
    pub(crate) kind: SetType,
    /// IPv6 (hash types only).
    pub(crate) v6: bool,
    /// Default element timeout in seconds; None: elements never expire.
    pub(crate) timeout: Option<u32>,
    /// Most elements (hash types) or member sets (list:set).
    pub(crate) size: u32,
    /// list:set only: its members.
    pub(crate) members: &'static [&'static str],
}

/// An iptables backend: the legacy x_tables or the nf_tables-backed `iptables-nft`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "iptables-nft",
        }
    }
}

/// What the host has and uses, as `netlink::shim` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct HostIptables {
    /// `iptables-legacy` (or an `iptables` that reports legacy) can be run.
    pub(crate) legacy_tools: bool,
    /// `iptables-nft` (or an `iptables` that reports nf_tables) can be run.
    pub(crate) nft_tools: bool,
    /// The legacy tables hold rules or chains (Fail2Ban's `f2b-*` among them).
    pub(crate) legacy_in_use: bool,
}

/// Where the chain goes, or None for no chain at all. An explicit backend the host lacks is an
/// error; `auto` with no iptables at all is None.
pub(crate) fn choose(mode: IptablesShim, host: HostIptables) -> Result<Option<Backend>, String> {
    let missing = |b: Backend| {
        format!(
            "nft.iptables_shim = {:?}, but this host has no {}",
            mode.to_string(),
            b.name()
        )
    };
    match mode {
        IptablesShim::Off => Ok(None),
        IptablesShim::Legacy if host.legacy_tools => Ok(Some(Backend::Legacy)),
        IptablesShim::Legacy => Err(missing(Backend::Legacy)),
        IptablesShim::Nft if host.nft_tools => Ok(Some(Backend::Nft)),
        IptablesShim::Nft => Err(missing(Backend::Nft)),
        IptablesShim::Auto => Ok(if host.legacy_tools && host.legacy_in_use {
            Some(Backend::Legacy)
        } else if host.nft_tools {
            Some(Backend::Nft)
        } else if host.legacy_tools {
            Some(Backend::Legacy)
        } else {
            None
        }),
    }
}

/// The ipsets, members before the list:sets that hold them.
pub(crate) fn ipsets(config: &Config) -> [IpsetSpec; 8] {
    let timeout = Some(ban_timeout_secs(config.mitigation.ban_duration));
    let hash = |name, kind, v6, size| IpsetSpec {
        name,
        kind,
        v6,
        timeout,
        size,
        members: &[],
    };
    let safe = |name, v6| IpsetSpec {
        name,
        kind: SetType::HashNet,
        v6,
        timeout: None,
        size: 65536,
        members: &[],
    };
    let list = |name, members| IpsetSpec {
        name,
        kind: SetType::ListSet,
        v6: false,
        timeout: None,
        size: 8,
        members,
    };
    let nft = &config.nft;
    [
        hash(IP4, SetType::HashIp, false, nft.ban4_size),
        hash(IP6, SetType::HashIp, true, nft.ban6_size),
        hash(NET4, SetType::HashNet, false, nft.bannet4_size),
        hash(NET6, SetType::HashNet, true, nft.bannet6_size),
        safe(SAFE4, false),
        safe(SAFE6, true),
        list(BAN4, &[IP4, NET4]),
        list(BAN6, &[IP6, NET6]),
    ]
}

/// The one rule of our chain for a family, as iptables arguments after `-A FTAGENT`: banned
/// and not safelisted → DROP.
pub(crate) fn chain_rule(v6: bool) -> [&'static str; 13] {
    let (ban, safe) = if v6 { (BAN6, SAFE6) } else { (BAN4, SAFE4) };
    [
        "-m",
        "set",
        "--match-set",
        ban,
        "src",
        "-m",
        "set",
        "!",
        "--match-set",
        safe,
        "src",
        "-j",
        "DROP",
    ]
}

/// The set a ban of `cidr` goes in.
pub(crate) fn ban_set(cidr: &Cidr) -> &'static str {
    match (cidr.is_ipv4(), cidr.is_host()) {
        (true, true) => IP4,
        (true, false) => NET4,
        (false, true) => IP6,
        (false, false) => NET6,
    }
}

/// The safelist entries as hash:net takes them: a /0 (which hash:net refuses) as two halves.
pub(crate) fn safelist_entries(safelist: &[Cidr], v6: bool) -> Vec<Cidr> {
    let mut out = Vec::new();
    for cidr in safelist.iter().filter(|c| c.is_ipv4() != v6) {
        if cidr.prefix_len() == 0 {
            let (low, high) = if v6 {
                ("::/1", "8000::/1")
            } else {
                ("0.0.0.0/1", "128.0.0.0/1")
            };
            out.extend([low, high].map(|c| c.parse::<Cidr>().expect("a valid literal")));
        } else {
            out.push(*cidr);
        }
    }
    out
}

/// A ban's time left in whole seconds as ipset takes it: at least 1, at most ipset's maximum.
pub(crate) fn ban_timeout_secs(left: Duration) -> u32 {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(secs.max(1))
        .unwrap_or(u32::MAX)
        .min(MAX_TIMEOUT_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(legacy_tools: bool, nft_tools: bool, legacy_in_use: bool) -> HostIptables {
        HostIptables {
            legacy_tools,
            nft_tools,
            legacy_in_use,
        }
    }

    #[test]
    fn auto_follows_the_backend_the_host_uses() {
        use IptablesShim::*;
        // Debian with Fail2Ban on iptables-legacy: legacy.
        assert_eq!(
            choose(Auto, host(true, true, true)),
            Ok(Some(Backend::Legacy))
        );
        // Debian 12 default, nothing in the legacy tables: the nft-backed iptables.
        assert_eq!(
            choose(Auto, host(true, true, false)),
            Ok(Some(Backend::Nft))
        );
        // AlmaLinux 9: no legacy iptables at all.
        assert_eq!(
            choose(Auto, host(false, true, false)),
            Ok(Some(Backend::Nft))
        );
        assert_eq!(
            choose(Auto, host(true, false, false)),
            Ok(Some(Backend::Legacy))
        );
        assert_eq!(choose(Auto, host(false, false, false)), Ok(None));
        assert_eq!(choose(Off, host(true, true, true)), Ok(None));
        assert_eq!(choose(Nft, host(true, true, true)), Ok(Some(Backend::Nft)));
        let err = choose(Legacy, host(false, true, false)).unwrap_err();
        assert!(
            err.contains("iptables_shim = \"legacy\"") && err.contains("iptables-legacy"),
            "{err}"
        );
    }

    #[test]
    fn bans_go_to_the_set_of_their_family_and_kind() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert_eq!(ban_set(&c("192.0.2.1/32")), IP4);
        assert_eq!(ban_set(&c("192.0.2.0/24")), NET4);
        assert_eq!(ban_set(&c("2001:db8::1/128")), IP6);
        assert_eq!(ban_set(&c("2001:db8::/64")), NET6);
    }

    #[test]
    fn one_rule_per_family_checks_the_safelist_before_dropping() {
        let v4 = chain_rule(false).join(" ");
        assert_eq!(
            v4,
            "-m set --match-set ftagent-ban4 src -m set ! --match-set ftagent-safe4 src -j DROP"
        );
        assert!(chain_rule(true)
            .join(" ")
            .contains("ftagent-ban6 src -m set ! --match-set ftagent-safe6"));
    }

    #[test]
    fn ipsets_are_sized_like_the_nft_sets_and_list_sets_come_last() {
        let config = Config::default();
        let sets = ipsets(&config);
        let ip4 = sets.iter().find(|s| s.name == IP4).unwrap();
        assert_eq!(ip4.size, config.nft.ban4_size);
        assert_eq!(
            ip4.timeout,
            Some(ban_timeout_secs(config.mitigation.ban_duration))
        );
        assert!(sets
            .iter()
            .filter(|s| s.name.starts_with("ftagent-safe"))
            .all(|s| s.timeout.is_none()));
        let first_list = sets
            .iter()
            .position(|s| s.kind == SetType::ListSet)
            .unwrap();
        assert!(sets[first_list..]
            .iter()
            .all(|s| s.kind == SetType::ListSet));
        assert!(sets
            .iter()
            .all(|s| ALL_SETS.contains(&s.name) && s.name.len() < 32));
    }

    #[test]
    fn safelist_entries_split_by_family_and_halve_a_default_route() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let list = [c("0.0.0.0/0"), c("192.0.2.0/24"), c("2001:db8::/32")];
        assert_eq!(
            safelist_entries(&list, false),
            vec![c("0.0.0.0/1"), c("128.0.0.0/1"), c("192.0.2.0/24")]
        );
        assert_eq!(safelist_entries(&list, true), vec![c("2001:db8::/32")]);
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds_within_ipset_limits() {
        assert_eq!(ban_timeout_secs(Duration::from_millis(1)), 1);
        assert_eq!(ban_timeout_secs(Duration::ZERO), 1);
        assert_eq!(ban_timeout_secs(Duration::from_millis(2500)), 3);
        assert_eq!(
            ban_timeout_secs(Duration::from_secs(u64::MAX)),
            MAX_TIMEOUT_SECS
        );
    }
}
