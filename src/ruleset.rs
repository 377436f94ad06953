//! Our nft table as plain data: what we want in the kernel (`desired`), what the kernel reports
//! back (`TableState`), and both rendered as nft text that `nft -c -f` accepts. Nothing here
//! touches the system; `rules/ftagent.nft` is this module's rendering of the default table.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use crate::addr::Cidr;
use crate::config::Config;

/// The name of our table (family inet). Nobody else writes to it; we write nowhere else.
pub const TABLE: &str = "ftagent";
/// Our filter chain on the prerouting hook.
pub const CHAIN: &str = "prerouting";
/// Before raw (-300), conntrack (-200), Fail2Ban (-1), iptables (0) and firewalld (+10): a
/// dropped flood costs no conntrack entry.
pub const PRIORITY: i32 = -310;

/// IPv4 or IPv6: the key type of a set and the network header a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(cidr: &Cidr) -> Family {
        if cidr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// nft's name for the address type of this family.
    pub fn key_type_name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    /// nft's name for the network header of this family in `ip saddr` / `ip6 saddr`.
    pub fn header_name(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// The role a set plays, which fixes its name, key family and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRole {
    /// Never dropped: matched first, with `return`.
    Allow(Family),
    /// Single banned addresses, each with a timeout.
    Ban(Family),
    /// Banned prefixes, each with a timeout.
    BanNet(Family),
}

impl SetRole {
    pub const ALL: [SetRole; 6] = [
        SetRole::Allow(Family::V4),
        SetRole::Allow(Family::V6),
        SetRole::Ban(Family::V4),
        SetRole::Ban(Family::V6),
        SetRole::BanNet(Family::V4),
        SetRole::BanNet(Family::V6),
    ];

    pub fn name(self) -> &'static str {
        match self {
            SetRole::Allow(Family::V4) => "allow4",
            SetRole::Allow(Family::V6) => "allow6",
            SetRole::Ban(Family::V4) => "ban4",
            SetRole::Ban(Family::V6) => "ban6",
            SetRole::BanNet(Family::V4) => "bannet4",
            SetRole::BanNet(Family::V6) => "bannet6",
        }
    }

    pub fn from_name(name: &str) -> Option<SetRole> {
        SetRole::ALL.into_iter().find(|r| r.name() == name)
    }

    pub fn family(self) -> Family {
        match self {
            SetRole::Allow(f) | SetRole::Ban(f) | SetRole::BanNet(f) => f,
        }
    }

    pub fn interval(self) -> bool {
        !matches!(self, SetRole::Ban(_))
    }

    pub fn timeout(self) -> bool {
        !matches!(self, SetRole::Allow(_))
    }

    /// The set a ban of this CIDR belongs in: a host goes to `ban4`/`ban6`, a prefix to
    /// `bannet4`/`bannet6`.
    pub fn for_ban(cidr: &Cidr) -> SetRole {
        let family = Family::of(cidr);
        if cidr.is_host() {
            SetRole::Ban(family)
        } else {
            SetRole::BanNet(family)
        }
    }
}

/// A set as we declare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub role: SetRole,
    /// Maximum number of elements (`size`); None for the safelist sets, which are unbounded.
    pub size: Option<u32>,
}

/// What a rule does with a packet whose source matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Leave our chain: the packet goes on to the rest of the ruleset (never `accept`).
    Return,
    Drop,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Return => "return",
            Verdict::Drop => "drop",
        }
    }
}

/// `ip saddr @set [counter] verdict` (or `ip6 saddr`): the only rule shape the table uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub set: SetRole,
    pub counter: bool,
    pub verdict: Verdict,
}

/// The whole table as we want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub sets: Vec<SetSpec>,
    /// The rules of our prerouting chain, in order: safelist first.
    pub rules: Vec<RuleSpec>,
}

/// The table the configuration asks for.
pub fn desired(config: &Config) -> TableSpec {
    let nft = &config.nft;
    let size = |role: SetRole| match role {
        SetRole::Allow(_) => None,
        SetRole::Ban(Family::V4) => Some(nft.ban4_size),
        SetRole::Ban(Family::V6) => Some(nft.ban6_size),
        SetRole::BanNet(Family::V4) => Some(nft.bannet4_size),
        SetRole::BanNet(Family::V6) => Some(nft.bannet6_size),
    };
    let sets = SetRole::ALL
        .into_iter()
        .map(|role| SetSpec {
            role,
            size: size(role),
        })
        .collect();
    let rules = SetRole::ALL
        .into_iter()
        .map(|role| match role {
            SetRole::Allow(_) => RuleSpec {
                set: role,
                counter: false,
                verdict: Verdict::Return,
            },
            SetRole::Ban(_) | SetRole::BanNet(_) => RuleSpec {
                set: role,
                counter: true,
                verdict: Verdict::Drop,
            },
        })
        .collect();
    TableSpec { sets, rules }
}

/// The key of a set element: an address or prefix, or (in an interval set whose neighbouring
/// prefixes were merged) an inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementKey {
    Cidr(Cidr),
    Range(IpAddr, IpAddr),
}

impl ElementKey {
    /// The key for the addresses from `start` up to (not including) `end`; None runs to the top
    /// of the family. A single CIDR block when the range is one, else an inclusive range.
    pub fn from_interval(start: IpAddr, end: Option<IpAddr>) -> ElementKey {
        if let Some(c) = Cidr::from_interval(start, end) {
            return ElementKey::Cidr(c);
        }
        let last = match (start, end) {
            (IpAddr::V4(_), Some(IpAddr::V4(e))) => IpAddr::V4(u32::from(e).wrapping_sub(1).into()),
            (IpAddr::V6(_), Some(IpAddr::V6(e))) => {
                IpAddr::V6(u128::from(e).wrapping_sub(1).into())
            }
            (IpAddr::V4(_), _) => IpAddr::V4(u32::MAX.into()),
            (IpAddr::V6(_), _) => IpAddr::V6(u128::MAX.into()),
        };
        ElementKey::Range(start, last)
    }
}

impl fmt::Display for ElementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElementKey::Cidr(c) => write!(f, "{c}"),
            ElementKey::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// One element of a set as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementState {
    pub key: ElementKey,
    pub timeout: Option<Duration>,
    /// Time left before the kernel removes it.
    pub expires: Option<Duration>,
}

/// A set as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    pub name: String,
    pub family: Option<Family>,
    pub interval: bool,
    pub timeout: bool,
    pub size: Option<u32>,
    pub elements: Vec<ElementState>,
}

/// A rule as the kernel reports it: one of ours, or something we do not recognise (which we
/// show as a comment rather than hide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleState {
    Known {
        spec: RuleSpec,
        packets: u64,
        bytes: u64,
    },
    Unknown(String),
}

/// A base chain's hook as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookState {
    pub hook: String,
    pub priority: i32,
    pub kind: String,
    pub policy_accept: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub name: String,
    pub hook: Option<HookState>,
    pub rules: Vec<RuleState>,
}

/// Our table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    pub owner: bool,
    pub persist: bool,
    pub sets: Vec<SetState>,
    pub chains: Vec<ChainState>,
}

impl TableState {
    /// The differences between this table and the spec, one line each; empty when it matches.
    pub fn differences(&self, spec: &TableSpec) -> Vec<String> {
        let mut diffs = Vec::new();
        for want in &spec.sets {
            let name = want.role.name();
            match self.sets.iter().find(|s| s.name == name) {
                None => diffs.push(format!("set {name} is missing")),
                Some(have) => {
                    let role = want.role;
                    if have.family != Some(role.family())
                        || have.interval != role.interval()
                        || have.timeout != role.timeout()
                        || have.size != want.size
                    {
                        diffs.push(format!("set {name} has other type, flags or size"));
                    }
                }
            }
        }
        for have in &self.sets {
            if SetRole::from_name(&have.name).is_none() {
                diffs.push(format!("unexpected set {}", have.name));
            }
        }
        match self.chains.iter().find(|c| c.name == CHAIN) {
            None => diffs.push(format!("chain {CHAIN} is missing")),
            Some(chain) => {
                let hook_ok = chain.hook.as_ref().is_some_and(|h| {
                    h.hook == "prerouting" && h.priority == PRIORITY && h.policy_accept
                });
                if !hook_ok {
                    diffs.push(format!(
                        "chain {CHAIN} has another hook, priority or policy"
                    ));
                }
                let have: Vec<Option<&RuleSpec>> = chain
                    .rules
                    .iter()
                    .map(|r| match r {
                        RuleState::Known { spec, .. } => Some(spec),
                        RuleState::Unknown(_) => None,
                    })
                    .collect();
                let want: Vec<Option<&RuleSpec>> = spec.rules.iter().map(Some).collect();
                if have != want {
                    diffs.push(format!("chain {CHAIN} has other rules"));
                }
            }
        }
        for chain in &self.chains {
            if chain.name != CHAIN {
                diffs.push(format!("unexpected chain {}", chain.name));
            }
        }
        diffs
    }

    /// The table as nft text, accepted by `nft -c -f`. Table flags are shown as a comment: the
    /// `owner` flag belongs to a running process and cannot be restored from a file.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("table inet ftagent {\n");
        if self.owner || self.persist {
            let flags: Vec<&str> = [(self.owner, "owner"), (self.persist, "persist")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
            let _ = writeln!(
                out,
                "\t# flags {} (held by the running ftagent)",
                flags.join(", ")
            );
        }
        for set in &self.sets {
            render_set(&mut out, set);
        }
        for chain in &self.chains {
            render_chain(&mut out, chain);
        }
        out.push_str("}\n");
        out
    }
}

impl TableSpec {
    /// The table as it would be listed right after creation: empty sets, zero counters.
    pub fn as_fresh_state(&self) -> TableState {
        let sets = self
            .sets
            .iter()
            .map(|s| SetState {
                name: s.role.name().to_string(),
                family: Some(s.role.family()),
                interval: s.role.interval(),
                timeout: s.role.timeout(),
                size: s.size,
                elements: Vec::new(),
            })
            .collect();
        let rules = self
            .rules
            .iter()
            .map(|spec| RuleState::Known {
                spec: spec.clone(),
                packets: 0,
                bytes: 0,
            })
            .collect();
        let hook = HookState {
            hook: "prerouting".to_string(),
            priority: PRIORITY,
            kind: "filter".to_string(),
            policy_accept: true,
        };
        let chains = vec![ChainState {
            name: CHAIN.to_string(),
            hook: Some(hook),
            rules,
        }];
        TableState {
            owner: false,
            persist: false,
            sets,
            chains,
        }
    }
}

fn render_set(out: &mut String, set: &SetState) {
    let _ = writeln!(out, "\tset {} {{", set.name);
    match set.family {
        Some(f) => {
            let _ = writeln!(out, "\t\ttype {}", f.key_type_name());
        }
        None => out.push_str("\t\t# key type not recognised\n"),
    }
    let flags: Vec<&str> = [(set.interval, "interval"), (set.timeout, "timeout")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if let Some(size) = set.size {
        let _ = writeln!(out, "\t\tsize {size}");
    }
    if !set.elements.is_empty() {
        out.push_str("\t\telements = {");
        for (i, e) in set.elements.iter().enumerate() {
            out.push_str(if i == 0 { " " } else { ",\n\t\t\t     " });
            let _ = write!(out, "{}", e.key);
            if let Some(t) = e.timeout {
                let _ = write!(out, " timeout {}", nft_duration(t));
            }
            if let Some(x) = e.expires {
                let _ = write!(out, " expires {}", nft_duration(x));
            }
        }
        out.push_str(" }\n");
    }
    out.push_str("\t}\n");
}

fn render_chain(out: &mut String, chain: &ChainState) {
    let _ = writeln!(out, "\tchain {} {{", chain.name);
    if let Some(h) = &chain.hook {
        let policy = if h.policy_accept { "accept" } else { "drop" };
        let _ = writeln!(
            out,
            "\t\ttype {} hook {} priority {}; policy {};",
            h.kind, h.hook, h.priority, policy
        );
    }
    for rule in &chain.rules {
        match rule {
            RuleState::Known {
                spec,
                packets,
                bytes,
            } => {
                let header = spec.set.family().header_name();
                let _ = write!(out, "\t\t{header} saddr @{}", spec.set.name());
                if spec.counter {
                    let _ = write!(out, " counter packets {packets} bytes {bytes}");
                }
                let _ = writeln!(out, " {}", spec.verdict.name());
            }
            RuleState::Unknown(what) => {
                let _ = writeln!(out, "\t\t# rule not written by ftagent: {what}");
            }
        }
    }
    out.push_str("\t}\n");
}

/// A duration in nft's syntax: `1d2h3m4s500ms`; zero is `0s`.
pub fn nft_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= len {
            let _ = write!(out, "{}{unit}", ms / len);
            ms %= len;
        }
    }
    if ms > 0 {
        let _ = write!(out, "{ms}ms");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_renders_as_rules_file() {
        let text = desired(&Config::default()).as_fresh_state().render();
        assert_eq!(text, include_str!("../rules/ftagent.nft"));
    }

    #[test]
    fn fresh_state_matches_its_spec() {
        let spec = desired(&Config::default());
        assert!(spec.as_fresh_state().differences(&spec).is_empty());
    }

    #[test]
    fn differences_name_what_is_wrong() {
        let spec = desired(&Config::default());
        let mut state = spec.as_fresh_state();
        state.sets.retain(|s| s.name != "ban6");
        state.chains[0]
            .rules
            .push(RuleState::Unknown("meta mark".into()));
        let diffs = state.differences(&spec);
        assert_eq!(
            diffs,
            vec!["set ban6 is missing", "chain prerouting has other rules"]
        );
    }

    #[test]
    fn durations_in_nft_syntax() {
        assert_eq!(nft_duration(Duration::from_millis(0)), "0s");
        assert_eq!(nft_duration(Duration::from_millis(2_500)), "2s500ms");
        assert_eq!(nft_duration(Duration::from_secs(90_061)), "1d1h1m1s");
    }

    #[test]
    fn bans_go_to_the_set_of_their_shape() {
        let host: Cidr = "10.250.0.1".parse().unwrap();
        let net: Cidr = "10.250.1.0/24".parse().unwrap();
        let host6: Cidr = "fd00:250::1".parse().unwrap();
        assert_eq!(SetRole::for_ban(&host).name(), "ban4");
        assert_eq!(SetRole::for_ban(&net).name(), "bannet4");
        assert_eq!(SetRole::for_ban(&host6).name(), "ban6");
    }
}
