//! BGP escalation in the event loop: feeds the planner (`escalate`) the tick's incidents and
//! sampled destinations, prints its `bgp_announced`/`bgp_withdrawn` events, and publishes the
//! wanted announcements to the worker that talks to gobgpd (`bgp`). Monitor mode has no
//! worker: the events say what would have been announced.

use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use crate::bgp::Speaker;
use crate::config::Config;
use crate::detect::Event;
use crate::escalate::{Announcement, BgpEvent, Escalator};
use crate::sense::talkers::Talkers;

/// Sampled destinations looked at per tick.
const DESTINATIONS: usize = 4;

pub(crate) struct Escalation {
    planner: Escalator,
    speaker: Option<Speaker>,
    events: Vec<BgpEvent>,
    destinations: [(IpAddr, u64); DESTINATIONS],
}

impl Escalation {
    /// None when `bgp.enabled` is false.
    pub(crate) fn start(config: &Config) -> io::Result<Option<Escalation>> {
        if !config.bgp.enabled {
            return Ok(None);
        }
        let own = crate::netlink::host::own_addresses().unwrap_or_else(|e| {
            log::warn!(
                "listing this host's addresses: {e}; only bgp.destinations can be announced"
            );
            Vec::new()
        });
        let planner = Escalator::new(config, own);
        let speaker = if planner.is_monitor() {
            None
        } else {
            Some(Speaker::start(&config.bgp)?)
        };
        log::info!(
            "BGP escalation through {} at {}{}",
            config.bgp.gobgp.display(),
            config.bgp.api,
            if speaker.is_none() {
                " (monitor mode: nothing is announced)"
            } else {
                ""
            }
        );
        Ok(Some(Escalation {
            planner,
            speaker,
            events: Vec::with_capacity(8),
            destinations: [(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0); DESTINATIONS],
        }))
    }

    /// The safelist (configured and automatic, with the host's own addresses): never the
    /// source of a FlowSpec rule.
    pub(crate) fn set_safelist(&mut self, safelist: Vec<crate::addr::Cidr>) {
        self.planner.set_safelist(safelist);
    }

    /// What is announced now (or would be, in monitor mode), for `ftagent status`.
    pub(crate) fn announcements(&self) -> &[Announcement] {
        self.planner.announcements()
    }

    /// One tick: this tick's detection events and sampled packets (before they are reset).
    /// Allocates nothing unless there are events or an announcement is due to go. Returns
    /// whether the announcements changed.
    pub(crate) fn tick(&mut self, events: &[Event], samples: &Talkers, now: Duration) -> bool {
        if !self.planner.ready() {
            if let Some(found) = self.speaker.as_ref().and_then(Speaker::found) {
                self.planner.adopt(&found, now);
                self.publish();
            }
        }
        if events.is_empty() && !self.planner.due(now) {
            return false;
        }
        let n = samples.top_destinations(&mut self.destinations);
        self.events.clear();
        let changed = self.planner.plan(
            events,
            &self.destinations[..n],
            samples.samples(),
            now,
            &mut self.events,
        );
        if !changed {
            return false;
        }
        let wall = SystemTime::now();
        let mut out = io::stdout().lock();
        for event in &self.events {
            let _ = writeln!(out, "{}", event.to_json(wall));
        }
        let _ = out.flush();
        self.publish();
        true
    }

    /// At exit: the announcements stay in the BGP daemon (a restart finds and reconciles them).
    pub(crate) fn log_remaining(&self) {
        let left = self.announcements();
        if self.speaker.is_some() && !left.is_empty() {
            let routes: Vec<String> = left.iter().map(|a| a.route.to_string()).collect();
            log::warn!(
                "{} BGP announcements stay in the BGP daemon until the next start reconciles them: {}",
                left.len(),
                routes.join("; ")
            );
        }
    }

    fn publish(&self) {
        if let Some(speaker) = &self.speaker {
            speaker.publish(
                self.planner
                    .announcements()
                    .iter()
                    .map(|a| a.route)
                    .collect(),
            );
        }
    }
}
