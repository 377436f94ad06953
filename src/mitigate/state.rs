//! The mitigator across restarts: the incidents being mitigated and what each holds in the
//! kernel, with the wall-clock time each item runs out. The daemon saves it when it changes,
//! so a restarted (or killed) agent knows what it had put in and lifts it when the incident
//! ends; what ran out meanwhile is dropped, and an incident that is no longer open is undone.
//! Each incident keeps its [`SAVED_HOSTS`] most recently banned hosts (and every prefix): the
//! others' bans stay in the kernel after a restart and run out by themselves.

use std::cmp::Reverse;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Change, Item, Measures, MitigationEvent, Mitigator};
use crate::addr::Cidr;
use crate::detect::Vector;
use crate::ruleset::Measure;

/// The banned hosts saved per incident at most: the ones whose bans run out last.
pub(crate) const SAVED_HOSTS: usize = 1024;

/// An item and when it runs out, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedItem<T> {
    pub(crate) what: T,
    pub(crate) until_ms: u64,
}

/// One incident being mitigated, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MitigatedIncident {
    pub(crate) id: String,
    pub(crate) vector: Vector,
    /// Banned addresses and prefixes (as text: `10.0.0.1`, `10.0.0.0/24`).
    pub(crate) bans: Vec<SavedItem<String>>,
    pub(crate) aggregates: Vec<SavedItem<Measure>>,
    pub(crate) syn_cookies: bool,
    pub(crate) escalated: bool,
    /// What operators lifted from it (`lift`'s MEASURE; `*`: everything), kept out after a
    /// restart too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) lifted: Vec<String>,
}

/// Milliseconds since the Unix epoch of the wall-clock time `at` on a clock that reads `now`
/// while the wall clock reads `wall_now`.
pub(crate) fn wall_ms(at: Duration, now: Duration, wall_now: SystemTime) -> u64 {
    let wall = match at.checked_sub(now) {
        Some(ahead) => wall_now + ahead,
        None => wall_now - (now - at),
    };
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time left until `until_ms`, if any.
pub(crate) fn left_until(until_ms: u64, wall_now: SystemTime) -> Option<Duration> {
    (UNIX_EPOCH + Duration::from_millis(until_ms))
        .duration_since(wall_now)
        .ok()
        .filter(|left| !left.is_zero())
}

impl Mitigator {
    /// The incidents being mitigated; `now` is the clock of `plan`, read while the wall clock
    /// reads `wall_now`.
    pub(crate) fn save(&self, now: Duration, wall_now: SystemTime) -> Vec<MitigatedIncident> {
        let until = |item| {
            self.until
                .get(&item)
                .map_or(0, |&u| wall_ms(u, now, wall_now))
        };
        let mut saved: Vec<MitigatedIncident> = self
            .active
            .iter()
            .filter_map(|(id, m)| {
                Some(MitigatedIncident {
                    id: id.clone(),
                    vector: vector_named(m.vector)?,
                    bans: self
                        .saved_bans(m)
                        .into_iter()
                        .map(|c| SavedItem {
                            what: c.to_string(),
                            until_ms: until(Item::Ban(c)),
                        })
                        .collect(),
                    aggregates: m
                        .aggregates
                        .iter()
                        .map(|&a| SavedItem {
                            what: a,
                            until_ms: until(Item::Measure(a)),
                        })
                        .collect(),
                    syn_cookies: m.syn_cookies,
                    escalated: m.escalated,
                    lifted: self.lifted_as_text(id),
                })
            })
            .collect();
        saved.sort_by(|a, b| a.id.cmp(&b.id));
        saved
    }

    /// An incident's bans to save: its `SAVED_HOSTS` hosts that run out last, and its
    /// prefixes; sorted.
    fn saved_bans(&self, m: &Measures) -> Vec<Cidr> {
        let mut hosts: Vec<(Duration, Cidr)> = m
            .hosts
            .iter()
            .map(|&c| {
                (
                    self.until.get(&Item::Ban(c)).copied().unwrap_or_default(),
                    c,
                )
            })
            .collect();
        if hosts.len() > SAVED_HOSTS {
            hosts.select_nth_unstable_by_key(SAVED_HOSTS, |&(until, c)| (Reverse(until), c));
            hosts.truncate(SAVED_HOSTS);
        }
        let mut bans: Vec<Cidr> = hosts.into_iter().map(|(_, c)| c).collect();
        bans.sort_unstable();
        let mut prefixes: Vec<Cidr> = m.prefixes.iter().copied().collect();
        prefixes.sort_unstable();
        bans.extend(prefixes);
        bans
    }

    /// Takes over saved incidents: what has not run out comes back in force (the daemon puts
    /// it back in the kernel with `in_force`); incidents that `is_open` no longer knows are
    /// undone at once, with their changes and events.
    pub(crate) fn resume(
        &mut self,
        saved: Vec<MitigatedIncident>,
        now: Duration,
        wall_now: SystemTime,
        is_open: &dyn Fn(&str) -> bool,
        changes: &mut Vec<Change>,
        out: &mut Vec<MitigationEvent>,
    ) {
        for incident in saved {
            let mut m = Measures {
                vector: incident.vector.name(),
                syn_cookies: incident.syn_cookies,
                escalated: incident.escalated,
                ..Measures::default()
            };
            for ban in &incident.bans {
                let (Ok(cidr), Some(left)) =
                    (ban.what.parse::<Cidr>(), left_until(ban.until_ms, wall_now))
                else {
                    continue;
                };
                if cidr.is_host() {
                    m.add_host(cidr);
                } else {
                    m.prefixes.insert(cidr);
                }
                self.hold(Item::Ban(cidr), now + left);
            }
            for a in &incident.aggregates {
                if let Some(left) = left_until(a.until_ms, wall_now) {
                    m.aggregates.push(a.what);
                    self.hold(Item::Measure(a.what), now + left);
                }
            }
            self.resume_lifts(&incident.id, &incident.lifted);
            self.active.insert(incident.id, m);
            self.revision += 1;
        }
        let mut ended: Vec<String> = self
            .active
            .keys()
            .filter(|id| !is_open(id))
            .cloned()
            .collect();
        ended.sort();
        for id in ended {
            self.undo(&id, changes, out);
        }
        for change in changes.iter() {
            match *change {
                Change::Unban { cidr } => self.until.remove(&Item::Ban(cidr)),
                Change::Disable { measure } => self.until.remove(&Item::Measure(measure)),
                _ => None,
            };
        }
    }

    fn hold(&mut self, item: Item, until: Duration) {
        let until = self.until.get(&item).map_or(until, |&held| held.max(until));
        match item {
            Item::Ban(cidr) => self.track(cidr, until),
            Item::Measure(_) => {
                self.until.insert(item, until);
            }
        }
    }
}

/// The vector of a name `Vector::name` gave.
fn vector_named(name: &str) -> Option<Vector> {
    serde_json::from_value(serde_json::Value::from(name)).ok()
}
