//! Our table as the kernel reports it back (`TableState`): its counters, sets and chains, the
//! bans in it, and how it differs from what we want (`TableSpec`). Plain data; `netlink`
//! fills it from a dump.

use std::time::Duration;

use super::expr::{self, Expr};
use super::{render, ElementKey, Key, KeyType, SetRole, TableSpec};
use crate::addr::Cidr;

/// One element of a set as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ElementState {
    pub(crate) key: Key,
    pub(crate) timeout: Option<Duration>,
    /// Time left before the kernel removes it.
    pub(crate) expires: Option<Duration>,
    /// For a counter map: the counter the key maps to.
    pub(crate) counter: Option<String>,
}

/// A set as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    pub(crate) name: String,
    pub(crate) key: Option<KeyType>,
    pub(crate) interval: bool,
    pub(crate) timeout: bool,
    pub(crate) size: Option<u32>,
    pub(crate) counter_map: bool,
    pub(crate) dynamic: bool,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) elements: Vec<ElementState>,
}

/// A named counter as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CounterState {
    pub(crate) name: String,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
}

/// A rule as the kernel reports it: expressions of our vocabulary, or a description of what
/// we do not recognise (shown as a comment rather than hidden).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RuleState {
    Known(Vec<Expr>),
    Unknown(String),
}

/// A base chain's hook as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookState {
    pub(crate) hook: String,
    pub(crate) priority: i32,
    pub(crate) kind: String,
    pub(crate) policy_accept: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainState {
    pub(crate) name: String,
    pub(crate) hook: Option<HookState>,
    pub(crate) rules: Vec<RuleState>,
}

/// Our table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    pub(crate) owner: bool,
    pub(crate) persist: bool,
    pub(crate) counters: Vec<CounterState>,
    pub(crate) sets: Vec<SetState>,
    pub(crate) chains: Vec<ChainState>,
}

/// The bans in a table as the kernel reports it, each with the time it has left (elements
/// without an expiry count as the set's default timeout, or are skipped without one).
pub(crate) fn bans_in(state: &TableState) -> Vec<(Cidr, Duration)> {
    let mut bans = Vec::new();
    for set in &state.sets {
        if !matches!(
            SetRole::from_name(&set.name),
            Some(SetRole::Ban(_) | SetRole::BanNet(_))
        ) {
            continue;
        }
        for element in &set.elements {
            let Key::Addr(ElementKey::Cidr(cidr)) = element.key else {
                continue;
            };
            if let Some(left) = element.expires.or(element.timeout).or(set.default_timeout) {
                bans.push((cidr, left));
            }
        }
    }
    bans
}

impl TableState {
    /// The differences between this table and the spec, one line each; empty when it matches.
    pub(crate) fn differences(&self, spec: &TableSpec) -> Vec<String> {
        let mut diffs = Vec::new();
        let mut have: Vec<&str> = self.counters.iter().map(|c| c.name.as_str()).collect();
        let mut want: Vec<&str> = spec.counters.iter().map(String::as_str).collect();
        have.sort_unstable();
        want.sort_unstable();
        if have != want {
            diffs.push("the named counters differ".to_string());
        }
        for want in &spec.sets {
            match self.sets.iter().find(|s| s.name == want.name) {
                None => diffs.push(format!("set {} is missing", want.name)),
                Some(have) => {
                    let shape_ok = have.key == Some(want.key)
                        && have.interval == want.interval
                        && have.timeout == want.timeout
                        && have.size == want.size
                        && have.counter_map == want.counter_map
                        && have.dynamic == want.dynamic
                        && have.default_timeout == want.default_timeout;
                    if !shape_ok {
                        diffs.push(format!("set {} has other type, flags or size", want.name));
                    }
                    if want.counter_map {
                        let listed: Vec<(Key, Option<&str>)> = have
                            .elements
                            .iter()
                            .map(|e| (e.key, e.counter.as_deref()))
                            .collect();
                        let wanted: Vec<(Key, Option<&str>)> = want
                            .elements
                            .iter()
                            .map(|(k, c)| (*k, Some(c.as_str())))
                            .collect();
                        if !same_members(&listed, &wanted) {
                            diffs.push(format!("map {} has other elements", want.name));
                        }
                    }
                }
            }
        }
        for have in &self.sets {
            if !spec.sets.iter().any(|s| s.name == have.name) {
                diffs.push(format!("unexpected set {}", have.name));
            }
        }
        for want in &spec.chains {
            let Some(chain) = self.chains.iter().find(|c| c.name == want.name) else {
                diffs.push(format!("chain {} is missing", want.name));
                continue;
            };
            let hook_ok = chain.hook.as_ref().is_some_and(|h| {
                h.hook == want.hook.name()
                    && h.priority == want.priority
                    && h.policy_accept
                    && h.kind == "filter"
            });
            if !hook_ok {
                diffs.push(format!(
                    "chain {} has another hook, type, priority or policy",
                    want.name
                ));
            }
            let rules_ok = chain.rules.len() == want.rules.len()
                && chain
                    .rules
                    .iter()
                    .zip(&want.rules)
                    .all(|(have, want)| match have {
                        RuleState::Known(exprs) => expr::same_rule(exprs, want),
                        RuleState::Unknown(_) => false,
                    });
            if !rules_ok {
                diffs.push(format!("chain {} has other rules", want.name));
            }
        }
        for chain in &self.chains {
            if !spec.chains.iter().any(|c| c.name == chain.name) {
                diffs.push(format!("unexpected chain {}", chain.name));
            }
        }
        diffs
    }

    /// The table as nft text, accepted by `nft -c -f`.
    pub fn render(&self) -> String {
        render::table(self)
    }

    /// A named counter's values.
    #[cfg(test)]
    pub(crate) fn counter(&self, name: &str) -> Option<&CounterState> {
        self.counters.iter().find(|c| c.name == name)
    }
}

fn same_members<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

impl TableSpec {
    /// The table as it would be listed right after creation: empty sets, zero counters.
    #[cfg(test)]
    pub(crate) fn as_fresh_state(&self) -> TableState {
        let counters = self
            .counters
            .iter()
            .map(|name| CounterState {
                name: name.clone(),
                packets: 0,
                bytes: 0,
            })
            .collect();
        let sets = self
            .sets
            .iter()
            .map(|s| SetState {
                name: s.name.clone(),
                key: Some(s.key),
                interval: s.interval,
                timeout: s.timeout,
                size: s.size,
                counter_map: s.counter_map,
                dynamic: s.dynamic,
                default_timeout: s.default_timeout,
                elements: s
                    .elements
                    .iter()
                    .map(|(key, counter)| ElementState {
                        key: *key,
                        timeout: None,
                        expires: None,
                        counter: Some(counter.clone()),
                    })
                    .collect(),
            })
            .collect();
        let chains = self
            .chains
            .iter()
            .map(|c| ChainState {
                name: c.name.to_string(),
                hook: Some(HookState {
                    hook: c.hook.name().to_string(),
                    priority: c.priority,
                    kind: "filter".to_string(),
                    policy_accept: true,
                }),
                rules: c
                    .rules
                    .iter()
                    .map(|r| RuleState::Known(r.clone()))
                    .collect(),
            })
            .collect();
        TableState {
            owner: false,
            persist: false,
            counters,
            sets,
            chains,
        }
    }
}
