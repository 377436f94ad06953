//! Measures stood down: an operator's `ftagent lift INCIDENT [MEASURE]` takes a port limit,
//! SYN proxy, ban… of an open incident out and keeps it out for the rest of that incident
//! (its updates do not put it back); and the ports of `mitigation.never_limit_ports` never get
//! a measure on the port at all. Each is reported as an event of its own.

use std::time::SystemTime;

use serde::Serialize;

use super::{describe, Action, Change, Item, Mitigator};
use crate::addr::Cidr;
use crate::event::{self, EventBody};
use crate::ruleset::Measure;

/// What an operator lifts from an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lift {
    /// Everything it holds.
    All,
    /// Every measure of one action (`limit_port`, `synproxy`, `ban`…: the events' `action`).
    Action(Action),
    /// One ban: an address or prefix.
    Ban(Cidr),
    /// One measure (a never-limited port's, once skipped).
    Measure(Measure),
}

impl Lift {
    /// `None`: everything; an address or prefix: that ban; else an action name.
    pub fn parse(measure: Option<&str>) -> Result<Lift, String> {
        let Some(text) = measure else {
            return Ok(Lift::All);
        };
        if let Ok(cidr) = text.parse::<Cidr>() {
            return Ok(Lift::Ban(cidr));
        }
        Action::parse(text).map(Lift::Action).ok_or_else(|| {
            let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
            format!(
                "{text:?} is neither an address nor a measure: use one of {}",
                names.join(", ")
            )
        })
    }

    fn covers(self, measure: Measure) -> bool {
        match self {
            Lift::All => true,
            Lift::Action(action) => describe(measure, 0, 0, 0, 0).0 == action,
            Lift::Ban(_) => false,
            Lift::Measure(m) => m == measure,
        }
    }

    fn covers_ban(self, cidr: Cidr) -> bool {
        match self {
            Lift::All | Lift::Action(Action::Ban) => true,
            Lift::Ban(c) => c == cidr || c.contains(cidr.addr()),
            Lift::Action(_) | Lift::Measure(_) => false,
        }
    }

    fn covers_syn_cookies(self) -> bool {
        matches!(self, Lift::All | Lift::Action(Action::SynCookies))
    }
}

/// A measure stood down: lifted by an operator, or skipped for a never-limited port;
/// serialised as the fields of its event (README, section "Events").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standdown {
    pub(crate) incident: String,
    pub(crate) vector: &'static str,
    pub(crate) action: Action,
    #[serde(serialize_with = "event::cidrs")]
    pub(crate) addresses: Vec<Cidr>,
    pub(crate) port: Option<u16>,
    pub(crate) proto: Option<&'static str>,
    pub(crate) by: StoodDownBy,
    #[serde(rename = "mode", serialize_with = "event::mode")]
    pub(crate) monitor: bool,
}

/// Who stood a measure down (the event's `by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoodDownBy {
    /// An operator's `ftagent lift`.
    Operator,
    /// Skipped: a port of `mitigation.never_limit_ports`.
    NeverLimitPorts,
}

impl Standdown {
    /// `mitigation_lifted` or `mitigation_skipped`.
    pub(crate) fn name(&self) -> &'static str {
        match self.by {
            StoodDownBy::Operator => "mitigation_lifted",
            StoodDownBy::NeverLimitPorts => "mitigation_skipped",
        }
    }

    /// One JSON line (the schema is in the README, section "Events").
    pub(crate) fn to_json(&self, wall_clock: SystemTime) -> String {
        event::line(self, wall_clock)
    }
}

impl EventBody for Standdown {
    fn name(&self) -> &'static str {
        Standdown::name(self)
    }
}

impl Mitigator {
    /// An operator's lift: what of `incident` `what` covers leaves the kernel (unless another
    /// open incident holds it too) and stays out until the incident ends. Returns how many
    /// measures and bans it took out (0: none in force now, kept out from now on); Err when
    /// no such incident is being mitigated.
    pub(crate) fn lift(
        &mut self,
        incident: &str,
        what: Lift,
        changes: &mut Vec<Change>,
    ) -> Result<usize, String> {
        let Some(m) = self.active.get_mut(incident) else {
            let mut open: Vec<&str> = self.active.keys().map(String::as_str).collect();
            open.sort_unstable();
            return Err(format!(
                "no incident {incident} is being mitigated (open: {})",
                if open.is_empty() {
                    "none".to_string()
                } else {
                    open.join(", ")
                }
            ));
        };
        let mut measures = Vec::new();
        m.aggregates.retain(|&a| {
            let lifted = what.covers(a);
            if lifted {
                measures.push(a);
            }
            !lifted
        });
        let mut bans: Vec<Cidr> = m
            .bans()
            .into_iter()
            .filter(|&c| what.covers_ban(c))
            .collect();
        bans.sort_unstable();
        for cidr in &bans {
            m.forget(cidr); // keeps the per-prefix counts right
        }
        let cookies = m.syn_cookies && what.covers_syn_cookies();
        if cookies {
            m.syn_cookies = false;
        }
        let (vector, monitor) = (m.vector, self.monitor);
        self.revision += 1; // saved with the incident: a change to save
        self.lifted
            .entry(incident.to_string())
            .or_default()
            .push(what);
        let notice = |action, addresses, port, proto| Standdown {
            incident: incident.to_string(),
            vector,
            action,
            addresses,
            port,
            proto,
            by: StoodDownBy::Operator,
            monitor,
        };
        let mut notices = Vec::new();
        for &measure in &measures {
            if !self.held_elsewhere(incident, |o| o.aggregates.contains(&measure)) {
                changes.push(Change::Disable { measure });
                self.until.remove(&Item::Measure(measure));
            }
            let (action, port, proto, _) = describe(measure, 0, 0, 0, 0);
            notices.push(notice(action, Vec::new(), port, proto));
        }
        for &cidr in &bans {
            if !self.held_elsewhere(incident, |o| {
                o.hosts.contains(&cidr) || o.prefixes.contains(&cidr)
            }) {
                changes.push(Change::Unban { cidr });
                self.until.remove(&Item::Ban(cidr));
            }
        }
        if !bans.is_empty() {
            notices.push(notice(Action::Ban, bans.clone(), None, None));
        }
        if cookies {
            if !self.held_elsewhere(incident, |o| o.syn_cookies) {
                changes.push(Change::SynCookies { on: false });
            }
            notices.push(notice(Action::SynCookies, Vec::new(), None, Some("tcp")));
        }
        self.notices.extend(notices);
        Ok(measures.len() + bans.len() + usize::from(cookies))
    }

    /// Whether another open incident than `incident` holds what `holds` looks for.
    fn held_elsewhere(&self, incident: &str, holds: impl Fn(&super::Measures) -> bool) -> bool {
        self.active.iter().any(|(id, m)| id != incident && holds(m))
    }

    /// Takes out of one update's measures what stands down: what an operator lifted from the
    /// incident, and measures on a never-limited port (reported once per incident). A SYN
    /// proxy stood down leaves SYN cookies in its place (unless those were lifted too).
    pub(super) fn stand_down(
        &mut self,
        incident: &str,
        vector: &'static str,
        aggregates: &mut Vec<Measure>,
        syn_cookies: &mut bool,
    ) {
        let proxy = |a: &Measure| matches!(a, Measure::SynProxy(_));
        let proxied = aggregates.iter().any(proxy);
        let lifts = self.lifted.get(incident).map_or(&[][..], Vec::as_slice);
        aggregates.retain(|&a| !lifts.iter().any(|l| l.covers(a)));
        let mut skipped = Vec::new();
        aggregates.retain(|&a| {
            let never = limited_port(a).is_some_and(|p| self.never_limit.contains(&p));
            if never {
                skipped.push(a);
            }
            !never
        });
        // A SYN flood whose proxy stands down still gets SYN cookies, the milder measure.
        if proxied && !aggregates.iter().any(proxy) {
            *syn_cookies = true;
        }
        *syn_cookies &= !lifts.iter().any(|l| l.covers_syn_cookies());
        for measure in skipped {
            let (action, port, proto, _) = describe(measure, 0, 0, 0, 0);
            self.notices.push(Standdown {
                incident: incident.to_string(),
                vector,
                action,
                addresses: Vec::new(),
                port,
                proto,
                by: StoodDownBy::NeverLimitPorts,
                monitor: self.monitor,
            });
            self.lifted
                .entry(incident.to_string())
                .or_default()
                .push(Lift::Measure(measure));
        }
    }

    /// Whether the operator lifted every ban of `incident`.
    pub(super) fn bans_lifted(&self, incident: &str) -> bool {
        self.lifted.get(incident).is_some_and(|l| {
            l.iter()
                .any(|l| matches!(l, Lift::All | Lift::Action(Action::Ban)))
        })
    }

    /// Takes the bans an operator lifted out of what one update just added (`changes` and
    /// `out` from the given positions on) and out of the incident's hosts and prefixes.
    pub(super) fn drop_lifted_bans(
        &mut self,
        incident: &str,
        first_change: usize,
        first_event: usize,
        changes: &mut Vec<Change>,
        out: &mut Vec<super::MitigationEvent>,
    ) {
        let Some(lifts) = self.lifted.get(incident) else {
            return;
        };
        let lifted = |c: &Cidr| {
            lifts
                .iter()
                .any(|l| matches!(l, Lift::Ban(_)) && l.covers_ban(*c))
        };
        let mut i = first_change;
        while i < changes.len() {
            match changes[i] {
                Change::Ban { cidr, .. } if lifted(&cidr) => {
                    changes.remove(i);
                }
                _ => i += 1,
            }
        }
        for e in out.iter_mut().skip(first_event) {
            e.addresses.retain(|c| !lifted(c));
        }
        let mut i = first_event;
        while i < out.len() {
            if out[i].action == Action::Ban && out[i].addresses.is_empty() {
                out.remove(i);
            } else {
                i += 1;
            }
        }
        if let Some(m) = self.active.get_mut(incident) {
            m.hosts.retain(|c| !lifted(c));
            m.prefixes.retain(|c| !lifted(c));
        }
    }

    /// An incident's operator lifts as `lift` takes them (`*`: everything), for its state file.
    pub(super) fn lifted_as_text(&self, incident: &str) -> Vec<String> {
        let lifts = self.lifted.get(incident).map_or(&[][..], Vec::as_slice);
        lifts
            .iter()
            .filter_map(|l| match l {
                Lift::All => Some("*".to_string()),
                Lift::Action(a) => Some(a.to_string()),
                Lift::Ban(c) => Some(c.to_string()),
                Lift::Measure(_) => None, // a never-limited port's: the config says it again
            })
            .collect()
    }

    /// Takes over an earlier run's operator lifts of an incident.
    pub(super) fn resume_lifts(&mut self, incident: &str, lifted: &[String]) {
        for text in lifted {
            let measure = (text != "*").then_some(text.as_str());
            if let Ok(lift) = Lift::parse(measure) {
                self.lifted
                    .entry(incident.to_string())
                    .or_default()
                    .push(lift);
            }
        }
    }

    /// The measures stood down since the last call, for their events.
    pub(crate) fn drain_notices(&mut self) -> std::vec::Drain<'_, Standdown> {
        self.notices.drain(..)
    }
}

/// The destination port a measure limits, if it is one on a port (a reflector's source port
/// is not).
fn limited_port(measure: Measure) -> Option<u16> {
    match measure {
        Measure::LimitUdpPort(p)
        | Measure::LimitTcpPort(p)
        | Measure::MeterNewConnections(p)
        | Measure::LimitConnections(p)
        | Measure::SynProxy(p) => Some(p),
        Measure::BlockReflector(_)
        | Measure::LimitProto(_)
        | Measure::LimitFragments(_)
        | Measure::BlockSynAcks(_)
        | Measure::BlockOddFlags(_)
        | Measure::LimitClosedPorts(_) => None,
    }
}
