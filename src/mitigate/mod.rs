//! Mitigation: incidents in, kernel changes out, as plain data. Pure — no I/O, the time is
//! passed in — so every decision is tested without a kernel. The daemon applies a tick's
//! changes as one nf_tables batch (or, in monitor mode, only reports them).
//!
//! This version acts on concentrated floods: their heaviest sources are banned in
//! `ban4`/`ban6` with a timeout (refreshed while the incident lasts), a /24 (/64) that
//! collects `prefix_after` banned sources is banned as a whole in `bannet4`/`bannet6`, and
//! everything an incident added is lifted when it ends. Safelisted sources are never banned.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::addr::Cidr;
use crate::config::{Config, Mode};
use crate::detect::{Event, EventKind};
use crate::sense::trace::rfc3339;

/// One change to our sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add (or refresh) a ban with this timeout.
    Ban { cidr: Cidr, timeout: Duration },
    /// Lift a ban (whether or not it is still there).
    Unban { cidr: Cidr },
}

/// What was done (or, in monitor mode, would have been done) for an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct MitigationEvent {
    pub applied: bool,
    pub incident: String,
    pub vector: &'static str,
    pub action: &'static str,
    pub addresses: Vec<Cidr>,
    pub timeout: Option<Duration>,
    /// Monitor mode: reported, not done.
    pub monitor: bool,
}

impl MitigationEvent {
    /// One JSON line (the schema is in the README, section "Events").
    pub fn to_json(&self, wall_clock: SystemTime) -> String {
        let event = if self.applied {
            "mitigation_applied"
        } else {
            "mitigation_removed"
        };
        let addresses: Vec<String> = self.addresses.iter().map(Cidr::to_string).collect();
        json!({
            "ts": rfc3339(wall_clock),
            "event": event,
            "incident": self.incident,
            "vector": self.vector,
            "action": self.action,
            "addresses": addresses,
            "timeout_s": self.timeout.map(|t| t.as_secs()),
            "mode": if self.monitor { "monitor" } else { "mitigate" },
        })
        .to_string()
    }
}

/// What one incident has put in place.
#[derive(Debug, Default)]
struct Measures {
    vector: &'static str,
    hosts: Vec<Cidr>,
    prefixes: Vec<Cidr>,
}

/// Decides the kernel changes for the incidents of each tick.
#[derive(Debug)]
pub struct Mitigator {
    monitor: bool,
    ban_duration: Duration,
    min_share: f64,
    prefix_after: usize,
    max_bans_per_second: f64,
    /// New bans the budget still allows, refilled at `max_bans_per_second`.
    budget: f64,
    last: Option<Duration>,
    safelist: Vec<Cidr>,
    active: HashMap<String, Measures>,
}

impl Mitigator {
    /// `safelist` is everything never to be banned: the configured CIDRs and the automatic
    /// ones (own addresses, gateways, resolvers, SSH peers).
    pub fn new(config: &Config, safelist: Vec<Cidr>) -> Mitigator {
        let m = &config.mitigation;
        let rate = f64::from(m.max_bans_per_second);
        Mitigator {
            monitor: m.mode == Mode::Monitor,
            ban_duration: m.ban_duration,
            min_share: m.min_source_share,
            prefix_after: m.prefix_after as usize,
            max_bans_per_second: rate,
            budget: rate,
            last: None,
            safelist,
            active: HashMap::new(),
        }
    }

    pub fn is_monitor(&self) -> bool {
        self.monitor
    }

    /// The changes for this tick's detection events, and the events describing them. `now` is
    /// monotonic time since start.
    pub fn plan(
        &mut self,
        events: &[Event],
        now: Duration,
        changes: &mut Vec<Change>,
        out: &mut Vec<MitigationEvent>,
    ) {
        let dt = self
            .last
            .map_or(0.0, |last| now.saturating_sub(last).as_secs_f64());
        self.last = Some(now);
        self.budget = (self.budget + dt * self.max_bans_per_second).min(self.max_bans_per_second);
        for event in events {
            match event.kind {
                EventKind::AttackStart | EventKind::AttackUpdate => self.act(event, changes, out),
                EventKind::AttackEnd => self.undo(&event.incident, changes, out),
            }
        }
    }

    /// Bans the incident's heavy sources (refreshing the ones already banned), and their
    /// prefixes once enough of a prefix is banned.
    fn act(&mut self, event: &Event, changes: &mut Vec<Change>, out: &mut Vec<MitigationEvent>) {
        if !event.concentrated {
            // Many sources: single bans do not help. The aggregate actions come later.
            return;
        }
        let timeout = self.ban_duration;
        let measures = self.active.entry(event.incident.clone()).or_default();
        measures.vector = event.vector.name();
        let mut added = Vec::new();
        for source in event.sources.iter().filter(|s| s.share >= self.min_share) {
            let host = Cidr::host(source.addr);
            if self.safelist.iter().any(|s| s.contains(source.addr)) {
                continue;
            }
            if measures.prefixes.iter().any(|p| p.contains(source.addr)) {
                continue; // already covered by its prefix
            }
            if measures.hosts.contains(&host) {
                changes.push(Change::Ban {
                    cidr: host,
                    timeout,
                }); // re-offence: refresh
                continue;
            }
            if self.budget < 1.0 {
                continue; // the cap: the next update tries again
            }
            self.budget -= 1.0;
            measures.hosts.push(host);
            changes.push(Change::Ban {
                cidr: host,
                timeout,
            });
            added.push(host);
        }
        if let Some(prefix) = crowded_prefix(&measures.hosts, &measures.prefixes, self.prefix_after)
        {
            if !self
                .safelist
                .iter()
                .any(|s| prefix.contains(s.addr()) || s.contains(prefix.addr()))
            {
                measures.prefixes.push(prefix);
                changes.push(Change::Ban {
                    cidr: prefix,
                    timeout,
                });
                added.push(prefix);
            }
        }
        if !added.is_empty() {
            out.push(MitigationEvent {
                applied: true,
                incident: event.incident.clone(),
                vector: measures.vector,
                action: "ban",
                addresses: added,
                timeout: Some(timeout),
                monitor: self.monitor,
            });
        }
    }

    /// Lifts what the incident added, except what another open incident still needs.
    fn undo(&mut self, incident: &str, changes: &mut Vec<Change>, out: &mut Vec<MitigationEvent>) {
        let Some(measures) = self.active.remove(incident) else {
            return;
        };
        let still_needed = |c: &Cidr| {
            self.active
                .values()
                .any(|m| m.hosts.contains(c) || m.prefixes.contains(c))
        };
        let lifted: Vec<Cidr> = measures
            .hosts
            .iter()
            .chain(&measures.prefixes)
            .copied()
            .filter(|c| !still_needed(c))
            .collect();
        if lifted.is_empty() {
            return;
        }
        changes.extend(lifted.iter().map(|&cidr| Change::Unban { cidr }));
        out.push(MitigationEvent {
            applied: false,
            incident: incident.to_string(),
            vector: measures.vector,
            action: "ban",
            addresses: lifted,
            timeout: None,
            monitor: self.monitor,
        });
    }

    /// The kernel refused a tick's changes: forget the bans they would have added, so the
    /// next update tries again.
    pub fn rejected(&mut self, changes: &[Change]) {
        for change in changes {
            if let Change::Ban { cidr, .. } = change {
                for m in self.active.values_mut() {
                    m.hosts.retain(|h| h != cidr);
                    m.prefixes.retain(|p| p != cidr);
                }
            }
        }
    }
}

/// A /24 (IPv6 /64) holding at least `after` of the banned hosts and not banned yet.
fn crowded_prefix(hosts: &[Cidr], prefixes: &[Cidr], after: usize) -> Option<Cidr> {
    hosts.iter().find_map(|h| {
        let prefix = prefix_of(h.addr())?;
        let members = hosts.iter().filter(|o| prefix.contains(o.addr())).count();
        (members >= after && !prefixes.contains(&prefix)).then_some(prefix)
    })
}

fn prefix_of(addr: IpAddr) -> Option<Cidr> {
    match addr {
        IpAddr::V4(a) => Cidr::new(IpAddr::V4((u32::from(a) & 0xffff_ff00).into()), 24).ok(),
        IpAddr::V6(a) => Cidr::new(
            IpAddr::V6((u128::from(a) & !((1u128 << 64) - 1)).into()),
            64,
        )
        .ok(),
    }
}

#[cfg(test)]
mod tests;
