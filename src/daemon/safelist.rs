//! The safelist kept current: the configured CIDRs plus (with `mitigation.auto_safelist`) the
//! host's own addresses, default gateways, name servers and the peers of established SSH
//! sessions. The cheap parts (own addresses, SSH peers) are read again every `REFRESH`, the
//! others (a dump of every route, resolv.conf) every `SLOW_REFRESH`, so an administrator who
//! logs in during an attack is safelisted within seconds. A change reaches the kernel as the
//! difference, in one batch (our allow sets) and one send per ipset (the iptables chain's),
//! and the mitigator and the BGP planner get the new list. The host's own addresses are never
//! banned even without the automatic safelist: they are read all the same.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Daemon;
use crate::addr::Cidr;
use crate::config::Config;
use crate::netlink::host::{own_addresses, AutoSafelist};
use crate::ruleset::diff;

/// The own addresses and SSH peers are read again this often.
const REFRESH: Duration = Duration::from_secs(2);
/// The default gateways and name servers, this often.
const SLOW_REFRESH: Duration = Duration::from_secs(60);
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The automatic parts as last read, and when to read them again.
pub(super) struct SafelistRefresh {
    parts: AutoSafelist,
    next: Instant,
    next_slow: Instant,
    /// The warnings last logged, so that a part failing at every refresh is logged once.
    warned: Vec<String>,
}

impl SafelistRefresh {
    /// Reads every part now and returns the whole safelist of `config` (logged).
    pub(super) fn start(config: &Config, now: Instant) -> (SafelistRefresh, Vec<Cidr>) {
        let mut refresh = SafelistRefresh {
            parts: AutoSafelist::default(),
            next: now,
            next_slow: now,
            warned: Vec::new(),
        };
        let safelist = refresh.read_all(config, now);
        (refresh, safelist)
    }

    /// Reads every part now (start, reload) and returns the whole safelist of `config`.
    pub(super) fn read_all(&mut self, config: &Config, now: Instant) -> Vec<Cidr> {
        self.next_slow = now;
        let safelist = self.read(config, now);
        if config.mitigation.auto_safelist {
            log::info!(
                "automatic safelist: {}",
                self.parts
                    .cidrs()
                    .iter()
                    .map(Cidr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        safelist
    }

    /// The host's addresses as last read.
    pub(super) fn own(&self) -> &[IpAddr] {
        &self.parts.own
    }

    /// Everything never banned: the safelist and the host's own addresses.
    pub(super) fn never_banned(&self, safelist: &[Cidr]) -> Vec<Cidr> {
        let mut all = safelist.to_vec();
        all.extend(self.parts.own.iter().map(|&a| Cidr::host(a)));
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The parts that are due read again; the whole safelist of `config`.
    fn read(&mut self, config: &Config, now: Instant) -> Vec<Cidr> {
        self.next = now + REFRESH;
        let mut warnings = Vec::new();
        if !config.mitigation.auto_safelist {
            match own_addresses() {
                Ok(own) => self.parts.own = own,
                Err(e) => warnings.push(format!("listing this host's addresses: {e}")),
            }
            self.warn(warnings);
            return config.safelist.clone();
        }
        warnings.extend(self.parts.read_sessions(config.mitigation.ssh_port));
        if now >= self.next_slow {
            self.next_slow = now + SLOW_REFRESH;
            warnings.extend(self.parts.read_routes_and_resolvers(Path::new(RESOLV_CONF)));
        }
        self.warn(warnings);
        let mut all = config.safelist.clone();
        all.extend(self.parts.cidrs());
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Logs the warnings not logged at the last read.
    fn warn(&mut self, warnings: Vec<String>) {
        for w in warnings.iter().filter(|w| !self.warned.contains(w)) {
            log::warn!("automatic safelist: {w}");
        }
        self.warned = warnings;
    }
}

impl Daemon {
    /// When due, reads the automatic safelist again and puts a changed one in force: the
    /// kernel's allow sets (the difference, one batch), the iptables ipsets, the mitigator
    /// and the BGP planner. A batch the kernel refuses is tried again at the next refresh.
    pub(super) fn refresh_safelist(&mut self, now: Instant) {
        if now < self.safelist_refresh.next {
            return;
        }
        let own_before = self.safelist_refresh.own().to_vec();
        let fresh = self.safelist_refresh.read(&self.config, now);
        if fresh != self.safelist {
            let change = diff::allow_diff(&self.safelist, &fresh);
            if change.is_empty() {
                // Within what the list held already (a host of a configured prefix).
            } else if let Err(e) = self.nft.update(&change) {
                log::error!("safelist not updated (tried again in {REFRESH:?}): {e}");
                return;
            }
            if let Some(shim) = &mut self.shim {
                if let Err(e) = shim.update_safelist(&self.safelist, &fresh) {
                    log::error!("safelist not updated in the iptables ipsets: {e}");
                }
            }
            let listed = |list: Vec<&Cidr>| {
                let text: Vec<String> = list.iter().map(|c| c.to_string()).collect();
                if text.is_empty() {
                    "none".to_string()
                } else {
                    text.join(", ")
                }
            };
            log::info!(
                "safelist refreshed: added {}; removed {}",
                listed(
                    fresh
                        .iter()
                        .filter(|c| !self.safelist.contains(c))
                        .collect()
                ),
                listed(
                    self.safelist
                        .iter()
                        .filter(|c| !fresh.contains(c))
                        .collect()
                )
            );
            self.safelist = fresh;
        } else if own_before == self.safelist_refresh.own() {
            return;
        }
        let never = self.safelist_refresh.never_banned(&self.safelist);
        if let Some(escalation) = &mut self.escalation {
            escalation.set_safelist(never.clone());
        }
        self.mitigator.set_safelist(never);
    }
}
